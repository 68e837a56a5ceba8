/**
 * "Open in browser" for a server in a sandbox (docs/ports.md): asks for a port link (a signed,
 * short-lived URL that opens that one port without the token) and opens it in a new tab. The tab is
 * opened before the request, so a popup blocker sees it as the click's own.
 */
import { useState } from 'react';
import { useApi } from '../lib/api.tsx';

export function OpenPort({ id }: { id: string }) {
  const { client, report } = useApi();
  const [port, setPort] = useState('');
  const [error, setError] = useState<string>();
  const n = Number(port);
  const valid = Number.isInteger(n) && n >= 1 && n <= 65535;
  const open = async (): Promise<void> => {
    const tab = window.open('about:blank', '_blank');
    try {
      const link = await client.portLink(id, n);
      if (tab) {
        tab.opener = null;
        tab.location.href = link.url;
      } else window.location.assign(link.url);
      setError(undefined);
    } catch (e) {
      tab?.close();
      setError(report(e));
    }
  };
  return (
    <form
      className="open-port"
      onSubmit={(e) => {
        e.preventDefault();
        if (valid) void open();
      }}
    >
      <input
        className="open-port-number"
        name="port"
        type="number"
        min="1"
        max="65535"
        step="1"
        placeholder="port"
        aria-label={`Port to open in ${id}`}
        value={port}
        onChange={(e) => setPort(e.target.value)}
      />
      <button type="submit" className="button ghost" disabled={!valid} title="Open the server listening on this port in the sandbox in a new tab (a link valid for an hour)">
        Open in browser
      </button>
      {error && (
        <span className="error small" role="alert">
          {error}
        </span>
      )}
    </form>
  );
}
