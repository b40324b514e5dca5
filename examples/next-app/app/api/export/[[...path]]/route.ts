// POST /api/export, GET /api/export/:id/status, GET|HEAD /api/export/:id/download,
// POST /api/export/:id/cancel, DELETE /api/export/:id
import { exportRoutes } from "@/lib/spooler";

export const runtime = "nodejs";
export const dynamic = "force-dynamic";
export const { GET, HEAD, POST, DELETE } = exportRoutes;
