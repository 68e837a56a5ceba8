/** Plain-text output shared by the CLI's listing commands (kiln images ls, kiln packs ls). */

/** Bytes as decimal megabytes, "-" when unknown. */
export function mb(bytes: number | undefined): string {
  return bytes === undefined ? '-' : `${(bytes / 1e6).toFixed(1)} MB`;
}

/** Rows as left-aligned columns two spaces apart, the first row being the header. */
export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows
    .map((r) =>
      r
        .map((cell, c) => cell.padEnd(widths[c]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
