import type { NextConfig } from "next";

const config: NextConfig = {
  // The tus server reads and writes its own files: load it with Node's require at run time
  // instead of bundling it.
  serverExternalPackages: ["@tus/server", "@tus/file-store"],
};

export default config;
