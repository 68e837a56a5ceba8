/**
 * Builds the dashboard into web/dist (served by kiln at / and /assets/*).
 *   npm run build:web                    production build
 *   npx vite --config web/vite.config.ts dev server; proxies the API to KILN_URL (default :8400)
 */
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const webDir = fileURLToPath(new URL('.', import.meta.url));
const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const api = process.env.KILN_URL ?? 'http://127.0.0.1:8400';

export default defineConfig({
  root: webDir,
  base: '/',
  // React's automatic JSX runtime via esbuild: no React plugin needed.
  esbuild: { jsx: 'automatic' },
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    emptyOutDir: true,
    chunkSizeWarningLimit: 700,
  },
  server: {
    // The dashboard imports the SDK package from ../sdk/src.
    fs: { allow: [repoRoot] },
    proxy: {
      '/v1': { target: api, ws: true },
      '/healthz': api,
      '/metrics': api,
      '/openapi.json': api,
    },
  },
});
