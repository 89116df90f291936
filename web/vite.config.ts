import { defineConfig } from 'vite';

// A static build: `dist/` is served by the local gateway at `/` and, in the cloud, by CloudFront from a
// private S3 bucket. Hashed files go under `assets/` (cached for a year); index.html is revalidated.
export default defineConfig({
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    target: 'es2022',
    outDir: 'dist',
    assetsDir: 'assets',
    // The size report reads the manifest to find what the first page loads.
    manifest: true,
    sourcemap: false,
    // Inline assets would need `data:` everywhere in the CSP; keep every asset a file.
    assetsInlineLimit: 0,
  },
  server: {
    // `npm run dev` against a running `make run` (the gateway on 127.0.0.1:8000).
    proxy: { '/api': 'http://127.0.0.1:8000' },
  },
});
