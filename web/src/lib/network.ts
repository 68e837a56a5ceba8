/** The network page's pure parts: merging polled events, filtering them, parsing the create form's allow list. */
import type { NetworkEvent } from '../../../sdk/src/index.ts';

export type VerdictFilter = 'all' | 'allowed' | 'refused';

/** The dashboard keeps as many events as the service does. */
export const EVENTS_KEPT = 2000;

/** `older` plus the newly polled events, newest first, without repeats, at most EVENTS_KEPT. */
export function mergeEvents(older: NetworkEvent[], polled: NetworkEvent[]): NetworkEvent[] {
  if (!polled.length) return older;
  const top = older[0]?.seq ?? 0;
  const fresh = polled.filter((e) => e.seq > top).sort((a, b) => b.seq - a.seq);
  return [...fresh, ...older].slice(0, EVENTS_KEPT);
}

/** "allowed" shows what went through, learn mode's passes included. */
export function filterEvents(events: NetworkEvent[], f: VerdictFilter): NetworkEvent[] {
  if (f === 'all') return events;
  return events.filter((e) => (f === 'refused' ? e.verdict === 'refused' : e.verdict !== 'refused'));
}

/** One entry per line; blank lines and # comments dropped. */
export function allowLines(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter(Boolean);
}

export function eventAddress(e: NetworkEvent): string {
  if (!e.address) return '';
  return e.port === undefined ? e.address : `${e.address}:${e.port}`;
}
