// tus resumable uploads into media/users/<user>/uploads/
import { uploadRoutes } from "@/lib/spooler";

export const runtime = "nodejs";
export const dynamic = "force-dynamic";
export const { POST, PATCH, HEAD, DELETE, OPTIONS } = uploadRoutes;
