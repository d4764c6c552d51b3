// The sweep's chart, rendered here as a small SVG with no library: the validation metric against
// adapter size (trainable parameters, log scale, since ranks usually double), one point per
// configuration, the pick ringed and labelled. Every text is escaped: module names come from users.

export interface ChartPoint {
  jobId: string;
  label: string;
  size: number;
  value: number;
}

const WIDTH = 640;
const HEIGHT = 400;
const MARGIN = { left: 70, right: 30, top: 40, bottom: 60 };

export function escapeXml(text: string): string {
  return text.replace(/[<>&'"]/g, (character) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", "'": "&apos;", '"': "&quot;" })[character]!);
}

const formatNumber = (value: number) => Number(value.toPrecision(4)).toString();

/** Maps [low, high] onto [from, to]; a single value lands in the middle. */
function scale(low: number, high: number, from: number, to: number): (value: number) => number {
  if (high === low) return () => (from + to) / 2;
  return (value) => from + ((value - low) / (high - low)) * (to - from);
}

export function renderSweepChart(points: ChartPoint[], metric: string, pickJobId: string | undefined, title: string): string {
  const plotRight = WIDTH - MARGIN.right;
  const plotBottom = HEIGHT - MARGIN.bottom;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="12">`,
    `<title>${escapeXml(title)}</title>`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="white"/>`,
    `<text x="${WIDTH / 2}" y="20" text-anchor="middle" font-size="14">${escapeXml(title)}</text>`,
    `<line class="axis" x1="${MARGIN.left}" y1="${plotBottom}" x2="${plotRight}" y2="${plotBottom}" stroke="black"/>`,
    `<line class="axis" x1="${MARGIN.left}" y1="${MARGIN.top}" x2="${MARGIN.left}" y2="${plotBottom}" stroke="black"/>`,
    `<text x="${(MARGIN.left + plotRight) / 2}" y="${HEIGHT - 15}" text-anchor="middle">trainable parameters (log scale)</text>`,
    `<text x="15" y="${(MARGIN.top + plotBottom) / 2}" text-anchor="middle" transform="rotate(-90 15 ${(MARGIN.top + plotBottom) / 2})">${escapeXml(metric)}</text>`,
  ];
  const usable = points.filter((point) => point.size > 0 && Number.isFinite(point.value));
  if (usable.length === 0) {
    parts.push(`<text x="${WIDTH / 2}" y="${HEIGHT / 2}" text-anchor="middle">no configuration has reported ${escapeXml(metric)} yet</text>`, "</svg>");
    return parts.join("\n");
  }
  const logSizes = usable.map((point) => Math.log2(point.size));
  const values = usable.map((point) => point.value);
  const x = scale(Math.min(...logSizes), Math.max(...logSizes), MARGIN.left + 20, plotRight - 20);
  const y = scale(Math.min(...values), Math.max(...values), plotBottom - 20, MARGIN.top + 20);
  for (const [text, at] of [[formatNumber(Math.min(...values)), Math.min(...values)], [formatNumber(Math.max(...values)), Math.max(...values)]] as const) {
    parts.push(`<text x="${MARGIN.left - 6}" y="${y(at) + 4}" text-anchor="end">${escapeXml(text)}</text>`);
  }
  const ordered = [...usable].sort((a, b) => a.size - b.size);
  parts.push(`<polyline fill="none" stroke="#999" points="${ordered.map((point) => `${x(Math.log2(point.size)).toFixed(1)},${y(point.value).toFixed(1)}`).join(" ")}"/>`);
  for (const point of ordered) {
    const [px, py] = [x(Math.log2(point.size)).toFixed(1), y(point.value).toFixed(1)];
    parts.push(
      `<circle class="point" data-job-id="${escapeXml(point.jobId)}" cx="${px}" cy="${py}" r="4" fill="#1f77b4"><title>${escapeXml(`${point.label}: ${metric} ${formatNumber(point.value)}, ${point.size} parameters`)}</title></circle>`,
      `<text x="${px}" y="${plotBottom + 16}" text-anchor="middle">${escapeXml(formatNumber(point.size))}</text>`,
    );
    if (point.jobId === pickJobId) {
      parts.push(
        `<circle class="pick" data-job-id="${escapeXml(point.jobId)}" cx="${px}" cy="${py}" r="9" fill="none" stroke="#d62728" stroke-width="2"/>`,
        `<text class="pick-label" x="${px}" y="${Number(py) - 14}" text-anchor="middle" fill="#d62728">${escapeXml(`pick: ${point.label}`)}</text>`,
      );
    }
  }
  parts.push("</svg>");
  return parts.join("\n");
}
