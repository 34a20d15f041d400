import { describe, expect, it } from "vitest";
import {
  compareStorageKeys,
  validateStorageKey,
  validateStoragePrefix,
} from "../../src/isolation/storage/keys.js";

const invalid = expect.objectContaining({ code: "invalid_storage_key" });

describe("validateStorageKey", () => {
  it("accepts ordinary keys unchanged", () => {
    for (const key of ["a", "docs/2024/report.pdf", "..a", "a..", "a/.b/c", "ünïcode/😀", "x".repeat(1024)]) {
      expect(validateStorageKey(key)).toBe(key);
    }
  });

  it.each([
    ["empty", ""],
    ["parent segment", "../b/secret"],
    ["parent segment in the middle", "a/../../x"],
    ["trailing parent segment", "a/.."],
    ["current segment", "."],
    ["current segment in the middle", "a/./b"],
    ["parent only", ".."],
    ["leading slash", "/etc/passwd"],
    ["backslash", "a\\b"],
    ["backslash traversal", "..\\..\\x"],
    ["NUL", "a\u0000b"],
    ["newline", "a\nb"],
    ["DEL", "a\u007fb"],
    ["C1 control", "a\u0085b"],
    ["lone surrogate", "a\ud800b"],
    ["empty segment", "a//b"],
    ["trailing slash", "a/"],
    ["1025 bytes", "x".repeat(1025)],
    ["1025 bytes of multi-byte characters", `${"é".repeat(512)}x`],
  ])("rejects %s", (_, key) => {
    expect(() => validateStorageKey(key)).toThrow(invalid);
  });

  it("rejects non-strings", () => {
    for (const key of [undefined, null, 1, {}, ["a"]]) expect(() => validateStorageKey(key)).toThrow(invalid);
  });

  it("explains the reason", () => {
    expect(() => validateStorageKey("a/../b")).toThrow(/"\.\." path segment/);
    expect(() => validateStorageKey("x".repeat(1025))).toThrow(/longer than 1024 bytes/);
  });
});

describe("validateStoragePrefix", () => {
  it("accepts empty and trailing-slash prefixes", () => {
    for (const prefix of ["", "a/", "a/b", "a/b/"]) expect(validateStoragePrefix(prefix)).toBe(prefix);
  });

  it("applies the other rules", () => {
    for (const prefix of ["../", "a/../", "/", "/a", "a\\", "a\u0000", "./", "a//", "x".repeat(1025)]) {
      expect(() => validateStoragePrefix(prefix)).toThrow(invalid);
    }
  });
});

describe("compareStorageKeys", () => {
  it("orders by UTF-8 bytes like S3, not by UTF-16 code units", () => {
    // UTF-16 puts 😀 (surrogates 0xD83D…) before U+FF5E; UTF-8, S3's order, puts it after.
    const keys = ["\uff5e", "😀", "a", "B", "a/b", "a0"];
    const byBytes = [...keys].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    expect([...keys].sort(compareStorageKeys)).toEqual(byBytes);
    expect(compareStorageKeys("\uff5e", "😀")).toBeLessThan(0);
    expect("\uff5e" < "😀").toBe(false);
  });
});
