// Measures what the first page costs: the JavaScript and CSS that index.html loads before anything is
// lazy-loaded (the entry chunk, its static imports, and their CSS), gzip- and brotli-compressed.
// Writes dist/size-report.json and fails the build above the budget.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';

const BUDGET_BYTES = 150 * 1024;
const dist = join(import.meta.dirname, '..', 'dist');
const manifest = JSON.parse(readFileSync(join(dist, '.vite', 'manifest.json'), 'utf8'));

function sizes(file) {
  const bytes = readFileSync(join(dist, file));
  return {
    file,
    raw: bytes.length,
    gzip: gzipSync(bytes, { level: 9 }).length,
    brotli: brotliCompressSync(bytes, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }).length,
  };
}

// The first page: every entry of index.html and the closure of their static imports.
const firstPage = new Set();
const visit = (key) => {
  const chunk = manifest[key];
  if (!chunk || firstPage.has(chunk.file)) return;
  firstPage.add(chunk.file);
  for (const css of chunk.css ?? []) firstPage.add(css);
  for (const imported of chunk.imports ?? []) visit(imported);
};
for (const [key, chunk] of Object.entries(manifest)) if (chunk.isEntry) visit(key);

const html = readFileSync(join(dist, 'index.html'), 'utf8');
for (const [, ref] of html.matchAll(/(?:src|href)="\/([^"]+\.(?:js|css))"/g)) firstPage.add(ref);

const code = (file) => file.endsWith('.js') || file.endsWith('.css');
const first = [...firstPage].filter(code).sort().map(sizes);
const lazy = Object.values(manifest)
  .flatMap((chunk) => [chunk.file, ...(chunk.css ?? [])])
  .filter((file, i, all) => code(file) && !firstPage.has(file) && all.indexOf(file) === i)
  .sort()
  .map(sizes);
const total = (list, key) => list.reduce((sum, entry) => sum + entry[key], 0);
const report = {
  budget_bytes: BUDGET_BYTES,
  first_page: {
    files: first,
    raw: total(first, 'raw'),
    gzip: total(first, 'gzip'),
    brotli: total(first, 'brotli'),
  },
  lazy: { files: lazy, gzip: total(lazy, 'gzip'), brotli: total(lazy, 'brotli') },
};
report.within_budget = Math.max(report.first_page.gzip, report.first_page.brotli) <= BUDGET_BYTES;
writeFileSync(join(dist, 'size-report.json'), `${JSON.stringify(report, null, 2)}\n`);

const kb = (bytes) => `${(bytes / 1024).toFixed(1)} KB`;
process.stdout.write(
  `[web] first page: ${first.length} files, ${kb(report.first_page.gzip)} gzip, ${kb(report.first_page.brotli)} brotli ` +
    `(${kb(report.first_page.raw)} raw; budget ${kb(BUDGET_BYTES)} compressed); lazy chunks ${kb(report.lazy.gzip)} gzip\n`,
);
if (!report.within_budget) {
  process.stderr.write(`[web] the first page is over its ${kb(BUDGET_BYTES)} budget: see dist/size-report.json\n`);
  process.exit(1);
}
