/** Shell: header with the token field, tabs routed by the URL hash, and the page. */
import { lazy, Suspense, useEffect, useState } from 'react';
import { TokenField } from './components/TokenField.tsx';
import { useMetricsSampler } from './lib/metrics.ts';
import { BackendsPage } from './pages/BackendsPage.tsx';
import { MetricsPage } from './pages/MetricsPage.tsx';
import { SandboxesPage } from './pages/SandboxesPage.tsx';

// The editor, the terminal and the review's diff view are the heavy parts: load them when first opened.
const RunPage = lazy(() => import('./pages/RunPage.tsx').then((m) => ({ default: m.RunPage })));
const TerminalPage = lazy(() => import('./pages/TerminalPage.tsx').then((m) => ({ default: m.TerminalPage })));
const NotebookPage = lazy(() => import('./pages/NotebookPage.tsx').then((m) => ({ default: m.NotebookPage })));
const NetworkPage = lazy(() => import('./pages/NetworkPage.tsx').then((m) => ({ default: m.NetworkPage })));
const ReviewPage = lazy(() => import('./pages/ReviewPage.tsx').then((m) => ({ default: m.ReviewPage })));

const TABS = [
  { id: 'sandboxes', label: 'Sandboxes' },
  { id: 'run', label: 'Run' },
  { id: 'notebook', label: 'Notebook' },
  { id: 'terminal', label: 'Terminal' },
  { id: 'review', label: 'Review' },
  { id: 'network', label: 'Network' },
  { id: 'backends', label: 'Backends & packs' },
  { id: 'metrics', label: 'Metrics' },
] as const;
type TabId = (typeof TABS)[number]['id'];

/** "#/terminal?sandbox=sb-1" → { tab: 'terminal', params } */
function parseHash(): { tab: TabId; params: URLSearchParams } {
  const [path = '', query = ''] = location.hash.replace(/^#\/?/, '').split('?');
  const tab = TABS.find((t) => t.id === path)?.id ?? 'sandboxes';
  return { tab, params: new URLSearchParams(query) };
}

export function App() {
  const [route, setRoute] = useState(parseHash);
  useEffect(() => {
    const on = () => setRoute(parseHash());
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  // Metrics are sampled for as long as the dashboard is open, whichever tab is shown.
  const samples = useMetricsSampler(2000);

  return (
    <div className="app">
      <header className="top">
        <div className="brand">
          <span className="logo" aria-hidden="true" />
          kiln
        </div>
        {/* biome-ignore lint/a11y/noNoninteractiveElementToInteractiveRole: the ARIA tabs pattern; the page tests find the tabs by role */}
        <nav className="tabs" role="tablist">
          {TABS.map((t) => (
            <a key={t.id} role="tab" href={`#/${t.id}`} aria-selected={route.tab === t.id} className={route.tab === t.id ? 'tab active' : 'tab'}>
              {t.label}
            </a>
          ))}
        </nav>
        <TokenField />
      </header>
      <main className="page">
        <Suspense fallback={<p className="muted">Loading…</p>}>
          {route.tab === 'sandboxes' && <SandboxesPage />}
          {route.tab === 'run' && <RunPage initialSandbox={route.params.get('sandbox') ?? undefined} />}
          {route.tab === 'notebook' && <NotebookPage initialSandbox={route.params.get('sandbox') ?? undefined} />}
          {route.tab === 'terminal' && <TerminalPage initialSandbox={route.params.get('sandbox') ?? undefined} />}
          {route.tab === 'review' && <ReviewPage sandbox={route.params.get('sandbox') ?? undefined} />}
          {route.tab === 'network' && <NetworkPage sandbox={route.params.get('sandbox') ?? undefined} />}
          {route.tab === 'backends' && <BackendsPage />}
          {route.tab === 'metrics' && <MetricsPage samples={samples} />}
        </Suspense>
      </main>
    </div>
  );
}
