import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { RawJson, responseText, rpcResult } from "../../src/server/json-rpc.js";

describe("responseText", () => {
  const id = fc.oneof(fc.string(), fc.integer());

  it("splices a RawJson result in: the same JSON as serialising the value", () => {
    fc.assert(
      fc.property(id, fc.jsonValue(), (requestId, value) => {
        const spliced = responseText(rpcResult(requestId, new RawJson(JSON.stringify(value))));
        expect(JSON.parse(spliced)).toEqual(JSON.parse(JSON.stringify(rpcResult(requestId, value))));
      }),
    );
  });

  it("is JSON.stringify for any other result, and a RawJson stays correct under JSON.stringify", () => {
    fc.assert(
      fc.property(id, fc.jsonValue(), (requestId, value) => {
        const plain = rpcResult(requestId, value);
        expect(responseText(plain)).toBe(JSON.stringify(plain));
        const raw = rpcResult(requestId, new RawJson(JSON.stringify(value)));
        expect(JSON.parse(JSON.stringify(raw))).toEqual(JSON.parse(JSON.stringify(plain)));
      }),
    );
  });
});
