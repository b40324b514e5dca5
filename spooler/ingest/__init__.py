"""Ingest: what every upload needs before anyone can cut (docs/ingest.md).

Job kinds `proxy` (proxy + waveform + poster + manifest in the derived-media root) and
`sync` (each angle's syncOffset from its sound), and the upload watcher that submits a
proxy job per new source content. Pure modules: models, derived, proxyplan, waveform,
syncmath, uploads. Shell: contentkey, proxy, sync, watch.
"""
