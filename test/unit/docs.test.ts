import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { CONFIGURATION_DOC, configurationDoc, configVariables } from '../../scripts/config-docs';

const ROOT = path.join(__dirname, '../..');
const DOCS = path.join(ROOT, 'docs');

/** The pages a reader can reach: the README, everything in docs/, the benchmark's README. */
const PAGES = ['README.md', ...readdirSync(DOCS).filter((name) => name.endsWith('.md')).map((name) => `docs/${name}`), 'bench/README.md'];

const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');

/** The page without fenced code blocks and inline code, where brackets are no links. */
function prose(markdown: string): string {
  return markdown.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '').replace(/(`+)[\s\S]*?\1/g, '');
}

/** Inline links and images, `[text](target)`, outside code. */
function linksOf(markdown: string): string[] {
  return [...prose(markdown).matchAll(/!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)].map((match) => match[1]);
}

/** Heading anchors as GitHub makes them: lower case, punctuation dropped, spaces to hyphens, repeats numbered. */
function anchorsOf(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  const withoutFences = markdown.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '');
  for (const [, heading] of withoutFences.matchAll(/^#{1,6}[ \t]+(.+?)[ \t#]*$/gm)) {
    const text = heading.replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1').replace(/[`*]/g, '');
    const slug = text.toLowerCase().replace(/[^\p{L}\p{M}\p{N}\p{Pc}\- ]/gu, '').replace(/ /g, '-');
    const count = seen.get(slug) ?? 0;
    seen.set(slug, count + 1);
    anchors.add(count === 0 ? slug : `${slug}-${count}`);
  }
  return anchors;
}

/** What is wrong with one relative link of a page, or null when it resolves. */
function brokenLink(page: string, link: string): string | null {
  if (/^[a-z][a-z0-9+.-]*:/i.test(link)) return null; // https:, mailto: … are not ours to check
  const [target, anchor] = link.split('#', 2) as [string, string | undefined];
  const file = target === '' ? page : path.posix.normalize(path.posix.join(path.posix.dirname(page), decodeURI(target)));
  if (file.startsWith('..') || !existsSync(path.join(ROOT, file))) return `${link}: no file ${file}`;
  if (anchor === undefined) return null;
  if (!file.endsWith('.md') || statSync(path.join(ROOT, file)).isDirectory()) return `${link}: an anchor into something that is not a Markdown page`;
  return anchorsOf(read(file)).has(anchor) ? null : `${link}: no heading #${anchor} in ${file}`;
}

/** Repository paths named in backticks, such as `src/db/tenant-scope.ts` or `ops/grafana/`. */
function namedPaths(markdown: string): string[] {
  const named = [...markdown.matchAll(/`((?:src|workers|queues|migrations|test|bench|ops|scripts|docs)\/[A-Za-z0-9_./-]*)`/g)].map((match) => match[1]);
  return [...new Set(named)];
}

describe('docs/configuration.md', () => {
  it('is what `npm run docs:config` writes from the configuration schema now', () => {
    const written = readFileSync(CONFIGURATION_DOC, 'utf8');
    // On failure: run `npm run docs:config` and commit the result.
    expect(written).toBe(configurationDoc());
  });

  it('describes every configuration variable', () => {
    const variables = configVariables();
    expect(variables.length).toBeGreaterThan(50);
    expect(variables.filter((variable) => !variable.description).map((variable) => variable.name)).toEqual([]);
  });

  it('lists every variable with its default as the environment would spell it', () => {
    const page = configurationDoc();
    for (const { name } of configVariables()) expect(page).toContain(`| \`${name}\` |`);
    expect(page).toContain('| `PORT` | `8080` |');
    expect(page).toContain('| `DATABASE_URL` | unset |');
    expect(page).toContain('| `RATE_LIMIT_KEY` | `free=300,standard=3000,enterprise=30000,unlimited=0` |');
    expect(page).toContain('| `WEBHOOK_RETRY_SCHEDULE` | `0,5,300,1800,7200,18000,36000,50400,72000,86400` |');
  });

  it('finds a description given inside .optional() or .default(), and refuses a variable without one', () => {
    const described = z.object({ INNER: z.string().describe('given inside').optional(), OUTER: z.coerce.number().default(3).describe('given outside') });
    expect(configVariables(described).map((variable) => [variable.name, variable.default, variable.description])).toEqual([
      ['INNER', undefined, 'given inside'],
      ['OUTER', '3', 'given outside'],
    ]);
    expect(() => configurationDoc(z.object({ SOMETHING_NEW: z.string().default('x') }))).toThrow(/SOMETHING_NEW/);
  });
});

describe('.env.example', () => {
  /** `NAME=value` lines, set or commented out, with the value (quoted, or up to the first space) and whether it is set. */
  const entries = [...read('.env.example').matchAll(/^(#?)[ \t]*([A-Z][A-Z0-9_]+)=(?:"([^"]*)"|(\S*))/gm)].map(([, comment, name, quoted, bare]) => ({
    name,
    value: quoted ?? bare,
    set: comment === '',
  }));

  it('names every configuration variable once, and nothing else', () => {
    const names = entries.map((entry) => entry.name);
    expect([...names].sort()).toEqual(configVariables().map((variable) => variable.name).sort());
  });

  it('sets each variable that has a default to exactly that default', () => {
    const given = new Map(entries.filter((entry) => entry.set).map((entry) => [entry.name, entry.value]));
    const differing = configVariables()
      // An empty default is the same as unset, so such a variable may stay commented out with an example.
      .filter((variable) => Boolean(variable.default) && given.get(variable.name) !== variable.default)
      .map((variable) => `${variable.name}: ${given.get(variable.name)} instead of ${variable.default}`);
    expect(differing).toEqual([]);
  });
});

describe('links in the documentation', () => {
  it('covers the README, every page of docs/ and the benchmark README', () => {
    expect(PAGES).toEqual(expect.arrayContaining(['README.md', 'docs/api.md', 'docs/configuration.md', 'docs/architecture.md', 'bench/README.md']));
    expect(PAGES.flatMap((page) => linksOf(read(page))).length).toBeGreaterThan(20);
  });

  it.each(PAGES)('every relative link and anchor in %s resolves', (page) => {
    const broken = linksOf(read(page))
      .map((link) => brokenLink(page, link))
      .filter(Boolean);
    expect(broken).toEqual([]);
  });

  it.each(PAGES)('every repository path named in %s exists', (page) => {
    expect(namedPaths(read(page)).filter((named) => !existsSync(path.join(ROOT, named)))).toEqual([]);
  });

  it('makes anchors as GitHub does', () => {
    const anchors = anchorsOf('# Tenants, tiers and quotas\n## Isolation: row-level security\n### `GET /api/x` and *more*\n## Notes\n## Notes\n```\n# not a heading\n```\n');
    expect([...anchors]).toEqual(['tenants-tiers-and-quotas', 'isolation-row-level-security', 'get-apix-and-more', 'notes', 'notes-1']);
  });

  it('finds broken links, anchors and paths', () => {
    expect(linksOf('see [a](docs/api.md#errors) and `[not](a-link.md)` and\n```\n[nor](this.md)\n```\n')).toEqual(['docs/api.md#errors']);
    expect(brokenLink('README.md', 'docs/api.md')).toBeNull();
    expect(brokenLink('README.md', 'docs/nothing-here.md')).toMatch(/no file/);
    expect(brokenLink('docs/api.md', 'search.md#no-such-heading')).toMatch(/no heading/);
    expect(brokenLink('docs/api.md', '#authentication')).toBeNull();
    expect(namedPaths('held in `src/nowhere/file.ts` and `src/config.ts`')).toEqual(['src/nowhere/file.ts', 'src/config.ts']);
  });
});
