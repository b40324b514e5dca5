/**
 * @spooler/client: the spooler file protocol and the Next.js App Router routes.
 *
 *   import { createExportRoutes } from "@spooler/client";          // server (Node.js runtime)
 *   import { createUploadRoutes } from "@spooler/client/uploads";  // server, tus uploads
 *   import { useExport, ExportButton } from "@spooler/client/react"; // browser
 */
export * from "./spooler.js";
export * from "./errors.js";
export * from "./range.js";
export * from "./poll.js";
export { checkEditorBody, pointerToPath, type FieldError } from "./validate.js";
export { scopeSources, sourceRefs, isPlainRelative } from "./media.js";
export { serveFile, contentDisposition, type ServeOptions } from "./download.js";
export { createExportRoutes, SWITCH_INDEX_KEY } from "./routes.js";
export type { Authorize, AuthTarget, ExportAction, ExportRoutes, ExportRoutesOptions, Handler } from "./routes.js";
