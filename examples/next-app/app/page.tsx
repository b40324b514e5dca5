"use client";
// One page: upload angles, edit the switch points (as JSON, to keep the example small),
// export with the package's button, then play and seek the result.
import { ExportButton, useExport } from "@spooler/client/react";
import { useEffect, useState } from "react";
import { Upload } from "tus-js-client";

interface Uploaded {
  name: string;
  source: string | null;
  percent: number;
  error: string | null;
}

function defaultTimeline(sources: string[]) {
  const angles = sources.map((source, i) => ({ id: `cam${i + 1}`, source }));
  const switches = angles.map((angle, i) => ({ at: i, angle: angle.id }));
  return { angles, switches, end: Math.max(2, angles.length), output: { fileName: "my-export" } };
}

function Player({ jobId }: { jobId: string | null }) {
  const job = useExport(jobId);
  if (!job.downloadUrl) return null;
  return <video data-testid="player" src={job.downloadUrl} controls preload="metadata" width={320} />;
}

export default function Page() {
  const [files, setFiles] = useState<Uploaded[]>([]);
  const [timeline, setTimeline] = useState("");
  const [jobId, setJobId] = useState<string | null>(null);

  useEffect(() => {
    if (!/(?:^|;\s*)user=/.test(document.cookie)) document.cookie = "user=demo; path=/; SameSite=Lax";
  }, []);

  const sources = files.flatMap((f) => (f.source ? [f.source] : []));
  useEffect(() => {
    if (sources.length > 0) setTimeline(JSON.stringify(defaultTimeline(sources), null, 2));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [sources.join("|")]);

  const upload = (list: FileList | null) => {
    for (const file of Array.from(list ?? [])) {
      const update = (patch: Partial<Uploaded>) =>
        setFiles((all) => all.map((f) => (f.name === file.name ? { ...f, ...patch } : f)));
      setFiles((all) => [...all, { name: file.name, source: null, percent: 0, error: null }]);
      const tus = new Upload(file, {
        endpoint: "/api/upload",
        chunkSize: 256 * 1024, // several PATCHes even for small files: resumable in practice
        retryDelays: [0, 1000, 3000],
        metadata: { filename: file.name, filetype: file.type },
        onProgress: (sent, total) => update({ percent: Math.round((100 * sent) / total) }),
        onSuccess: (payload) => update({ percent: 100, source: payload.lastResponse.getHeader("Spooler-Source") ?? null }),
        onError: (error) => update({ error: String(error) }),
      });
      tus.start();
    }
  };

  return (
    <main style={{ fontFamily: "sans-serif", maxWidth: 720, margin: "2rem auto" }}>
      <h1>Multicam export</h1>
      <section>
        <h2>1. Angles</h2>
        <input data-testid="files" type="file" accept="video/*" multiple onChange={(e) => upload(e.target.files)} />
        <ul data-testid="uploads">
          {files.map((f) => (
            <li key={f.name} data-name={f.name} data-source={f.source ?? ""}>
              {f.name}: {f.error ?? (f.source ? `uploaded as ${f.source}` : `${f.percent} %`)}
            </li>
          ))}
        </ul>
      </section>
      <section>
        <h2>2. Switch points</h2>
        <textarea data-testid="timeline" rows={14} cols={70} value={timeline} onChange={(e) => setTimeline(e.target.value)} />
      </section>
      <section>
        <h2>3. Export</h2>
        <ExportButton
          timeline={() => {
            try {
              return JSON.parse(timeline);
            } catch {
              return timeline; // sent as a JSON string: the route answers what is wrong
            }
          }}
          onJob={setJobId}
        />
        <Player jobId={jobId} />
      </section>
    </main>
  );
}
