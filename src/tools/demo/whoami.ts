import { z } from "zod";
import { defineTool } from "../define-tool.js";

/** Who the server thinks the caller is: tenant, user, scopes, issuer. */
export const whoami = defineTool({
  name: "whoami",
  description: "Returns the caller's tenant, user id, scopes and issuer, as this server verified them.",
  input: z.object({}),
  annotations: { readOnlyHint: true },
  run: (_input, ctx) => ({
    tenantId: ctx.tenant.tenantId,
    tenantName: ctx.tenant.tenantName ?? ctx.tenantRecord.name,
    userId: ctx.tenant.userId,
    scopes: [...ctx.tenant.scopes],
    issuer: ctx.tenant.issuer,
    ...(ctx.tenant.impersonation ? { impersonatedBy: `admin:${ctx.tenant.impersonation.adminId}` } : {}),
  }),
});
