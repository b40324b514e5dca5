/**
 * The editor's request body checked against the daemon's own JSON Schema (job-schema.ts is
 * generated from schema/job.schema.json), so the route refuses with 400 what the daemon
 * would reject, with paths in the editor's terms. Cross-field rules and limits stay the
 * daemon's: the route waits briefly for its verdict instead of copying them.
 */
import { Ajv2020, type ErrorObject, type ValidateFunction } from "ajv/dist/2020.js";

import { jobSchema } from "./job-schema.js";

export interface FieldError {
  /** JSON path in the editor's terms: `switches[3].at`, `output.size.height`, `angles`. */
  path: string;
  /** The schema keyword that failed (`required`, `minimum`, `type`, ...) or a spooler code. */
  code: string;
  message: string;
}

let compiled: ValidateFunction | undefined;

function validator(): ValidateFunction {
  if (compiled) return compiled;
  // strict: false because the schema carries OpenAPI's `discriminator` and pydantic's
  // `format`s, which are annotations here; every validating keyword is still applied.
  const ajv = new Ajv2020({ allErrors: true, strict: false, validateFormats: false });
  const defs = (jobSchema as { $defs: Record<string, unknown> }).$defs;
  compiled = ajv.compile({
    $defs: defs,
    allOf: [{ $ref: "#/$defs/ExportJob" }],
    // The editor's body is an export with switch points: these make it one.
    required: ["angles", "switches", "end"],
  });
  return compiled;
}

/** `/switches/3/at` → `switches[3].at`. */
export function pointerToPath(pointer: string, extra?: string): string {
  const parts = pointer.split("/").slice(1).map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
  if (extra !== undefined) parts.push(extra);
  let out = "";
  for (const part of parts) {
    out += /^\d+$/.test(part) ? `[${part}]` : out === "" ? part : `.${part}`;
  }
  return out === "" ? "(body)" : out;
}

function toFieldError(error: ErrorObject): FieldError {
  const params = error.params as Record<string, unknown>;
  const extra =
    typeof params.missingProperty === "string"
      ? params.missingProperty
      : typeof params.additionalProperty === "string"
        ? params.additionalProperty
        : undefined;
  const message =
    extra !== undefined && error.keyword === "additionalProperties"
      ? "unknown field"
      : extra !== undefined && error.keyword === "required"
        ? "field required"
        : (error.message ?? error.keyword);
  return { path: pointerToPath(error.instancePath, extra), code: error.keyword, message };
}

/**
 * The body's problems, most specific first; empty when the shape is valid. Unions (audio,
 * size) report only their deepest errors: "must match exactly one schema" says nothing an
 * editor can act on when a branch's own error names the field.
 */
export function checkEditorBody(body: unknown): FieldError[] {
  const validate = validator();
  if (validate(body)) return [];
  const errors = (validate.errors ?? []).filter(
    (e) => e.keyword !== "oneOf" && e.keyword !== "anyOf" && e.keyword !== "if",
  );
  const picked = errors.length > 0 ? errors : (validate.errors ?? []);
  const seen = new Set<string>();
  const out: FieldError[] = [];
  for (const error of picked) {
    const field = toFieldError(error);
    const key = `${field.path}|${field.code}|${field.message}`;
    if (!seen.has(key)) {
      seen.add(key);
      out.push(field);
    }
  }
  return out.slice(0, 50);
}
