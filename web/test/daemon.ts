// A real daemon (`python -m spooler run`) on a temporary spool, for the node tests. The
// Python interpreter is $SPOOLER_PYTHON, else ../.venv/bin/python, else python3.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, promises as fs } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const webDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const repoDir = path.resolve(webDir, "..");

export function pythonBinary(): string {
  if (process.env.SPOOLER_PYTHON) return process.env.SPOOLER_PYTHON;
  const venv = path.join(repoDir, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

// Short periods, as tests/conftest.py uses, so the suite takes seconds.
const FAST: Record<string, string> = {
  SPOOLER_RESCAN_SECONDS: "0.5",
  SPOOLER_HEARTBEAT_SECONDS: "0.5",
  SPOOLER_LEASE_SECONDS: "3",
  SPOOLER_SETTLE_SECONDS: "1",
  SPOOLER_TICK_SECONDS: "0.05",
  SPOOLER_STATUS_INTERVAL_SECONDS: "0.2",
  SPOOLER_KILL_GRACE_SECONDS: "1",
  SPOOLER_SHUTDOWN_GRACE_SECONDS: "2",
  SPOOLER_LOG_FORMAT: "json",
  SPOOLER_FFMPEG_NICE: "0",
};

export function spoolerEnv(spoolDir: string, mediaDir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("SPOOLER_")) env[key] = value;
  }
  return { ...env, ...FAST, SPOOLER_SPOOL_DIR: spoolDir, SPOOLER_MEDIA_ROOTS: JSON.stringify([mediaDir]) };
}

export async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export interface Daemon {
  process: ChildProcess;
  log: () => string;
  stop: () => Promise<void>;
}

/** Start the daemon; resolves once its first heartbeat is on the spool. */
export async function startDaemon(cwd: string, spoolDir: string, mediaDir: string): Promise<Daemon> {
  let log = "";
  const child = spawn(pythonBinary(), ["-m", "spooler", "run"], {
    cwd,
    env: spoolerEnv(spoolDir, mediaDir),
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout?.on("data", (chunk: Buffer) => (log += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (log += chunk.toString()));
  await waitUntil("the daemon's heartbeat", async () => {
    if (child.exitCode !== null) throw new Error(`daemon exited:\n${log}`);
    try {
      return (await fs.readdir(path.join(spoolDir, "workers"))).some((n) => n.endsWith(".json"));
    } catch {
      return false;
    }
  });
  return {
    process: child,
    log: () => log,
    stop: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** The ffmpeg binary of the imageio-ffmpeg wheel the daemon uses. */
export function ffmpegBinary(): string {
  const result = spawnSync(pythonBinary(), ["-c", "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())"], {
    encoding: "utf8",
  });
  if (result.status !== 0) throw new Error(`no ffmpeg: ${result.stderr}`);
  return result.stdout.trim();
}

/** A small test clip (lavfi): H.264 + AAC, `seconds` long, 64x36 at 10 fps. */
export function makeClip(file: string, seconds: number): void {
  const result = spawnSync(
    ffmpegBinary(),
    [
      "-nostdin", "-loglevel", "error", "-y",
      "-f", "lavfi", "-i", `testsrc2=size=64x36:rate=10:duration=${seconds}`,
      "-f", "lavfi", "-i", `sine=frequency=440:sample_rate=48000:duration=${seconds}`,
      "-c:v", "libx264", "-preset", "ultrafast", "-g", "10", "-pix_fmt", "yuv420p",
      "-c:a", "aac", "-b:a", "64k", "-shortest", file,
    ],
    { encoding: "utf8" },
  );
  if (result.status !== 0) throw new Error(`ffmpeg failed: ${result.stderr}`);
}
