/**
 * The layers kiln's code claims, checked by scripts/test.sh (npx depcruise src web/src sdk/src).
 * A rule here replaces a sentence in a comment: break one and the test command fails, naming it.
 */
/** The registry of backends: the only module that imports concrete backends. */
const REGISTRY = '^src/server/backends\\.ts$';

module.exports = {
  forbidden: [
    {
      name: 'no-cycles',
      severity: 'error',
      comment: 'Modules form no import cycle (type-only imports included).',
      from: {},
      to: { circular: true },
    },
    {
      name: 'backends-only-from-registry',
      severity: 'error',
      comment: 'Only the registry (src/server/backends.ts) imports a concrete backend, statically or not; everyone else sees the Backend interface in src/core/backend.ts.',
      from: { path: '^src/', pathNot: [REGISTRY, '^src/backends/'] },
      to: { path: '^src/backends/' },
    },
    {
      name: 'backends-not-each-other',
      severity: 'error',
      comment: 'A backend does not import another backend; what two share lives in src/core, src/protocol or src/vmimage.',
      from: { path: '^src/backends/([^/]+)/' },
      to: { path: '^src/backends/', pathNot: '^src/backends/$1/' },
    },
    {
      name: 'store-only-from-composition-root',
      severity: 'error',
      comment: 'The store engines (src/store: PGlite, PostgreSQL, SQL) are opened by the composition root only; the lifecycle sees the Store interface in src/core/store.ts and does not know which engine is behind it.',
      from: { path: '^src/', pathNot: ['^src/server/compose\\.ts$', '^src/store/'] },
      to: { path: '^src/store/' },
    },
    {
      name: 'sdk-is-standalone',
      severity: 'error',
      comment: 'The SDK package (sdk/src, published as @kiln/sdk) imports only itself and Node built-ins: no server, core, protocol or backend code, no npm package (it has no dependencies).',
      from: { path: '^sdk/src/' },
      to: { pathNot: '^sdk/src/', dependencyTypesNot: ['core'] },
    },
    {
      name: 'web-only-sdk',
      severity: 'error',
      comment: 'The dashboard (web/src) reaches the host code only through the SDK package (sdk/src).',
      from: { path: '^web/src/' },
      to: { path: '^(src|sdk)/', pathNot: '^sdk/src/' },
    },
    {
      name: 'protocol-below-server-and-backends',
      severity: 'error',
      comment: 'The host<->agent protocol (src/protocol) imports neither the server, the CLI nor a backend.',
      from: { path: '^src/protocol/' },
      to: { path: '^src/(server|cli|backends)/' },
    },
    {
      name: 'core-below-server-and-cli',
      severity: 'error',
      comment: 'The sandbox lifecycle (src/core) imports neither the HTTP server nor the CLI.',
      from: { path: '^src/core/' },
      to: { path: '^src/(server|cli)/' },
    },
    {
      name: 'workspace-below-server-and-backends',
      severity: 'error',
      comment: 'Workspaces (src/workspace: mounts, scan, review) build on src/core only: no server, CLI or backend.',
      from: { path: '^src/workspace/' },
      to: { path: '^src/(server|cli|backends)/' },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      comment: 'Every import resolves (a typo or a removed file fails here, not at run time).',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)(dist|node_modules)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    // Subpath exports (@bufbuild/protobuf/wkt) resolve through the package's "exports" map.
    enhancedResolveOptions: { extensions: ['.ts', '.tsx', '.js', '.mjs', '.json'], exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'] },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
