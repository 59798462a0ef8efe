import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

/** One import of one module: where it leads, and whether it loads that module when this one loads. */
export interface ImportEdge {
  to: string;
  /** `import type`, `export type`: erased when compiled; loads nothing. */
  typeOnly: boolean;
  /** `import()`, or `require()` inside a function: loaded later, if ever, not with this module. */
  dynamic: boolean;
}

/** The project's own modules (paths relative to the root, with `/`) and their imports of each other. */
export type ImportGraph = Map<string, ImportEdge[]>;

const EXTENSIONS = ['.ts', '.tsx', '/index.ts'];

function resolve(root: string, from: string, specifier: string): string | null {
  if (!specifier.startsWith('.')) return null;
  const base = path.join(root, path.dirname(from), specifier);
  for (const candidate of [base, ...EXTENSIONS.map((extension) => base + extension)]) {
    if (existsSync(candidate) && statSync(candidate).isFile()) return path.relative(root, candidate).split(path.sep).join('/');
  }
  return null;
}

function sourceFiles(root: string, folder: string): string[] {
  const full = path.join(root, folder);
  if (!existsSync(full)) return [];
  return readdirSync(full, { withFileTypes: true }).flatMap((entry) => {
    const relative = `${folder}/${entry.name}`;
    if (entry.isDirectory()) return sourceFiles(root, relative);
    return entry.isFile() && /\.tsx?$/.test(entry.name) && !entry.name.endsWith('.d.ts') ? [relative] : [];
  });
}

/** Reads every module under `folders` with the TypeScript parser: import and export declarations, `import type('…')`, `require('…')` and `import('…')`. */
export function importGraph(root: string, folders: readonly string[]): ImportGraph {
  const graph: ImportGraph = new Map();
  for (const file of folders.flatMap((folder) => sourceFiles(root, folder))) {
    const source = ts.createSourceFile(file, readFileSync(path.join(root, file), 'utf8'), ts.ScriptTarget.ES2022, true);
    const edges: ImportEdge[] = [];
    const add = (specifier: string, typeOnly: boolean, dynamic: boolean) => {
      const to = resolve(root, file, specifier);
      if (to) edges.push({ to, typeOnly, dynamic });
    };
    // A require() inside a function runs when the function does, not when the module loads.
    const visit = (node: ts.Node, inFunction = false) => {
      if (ts.isImportDeclaration(node) && ts.isStringLiteral(node.moduleSpecifier)) {
        const clause = node.importClause;
        const typeOnly = Boolean(clause?.isTypeOnly || (clause?.namedBindings && ts.isNamedImports(clause.namedBindings) && !clause.name && clause.namedBindings.elements.length > 0 && clause.namedBindings.elements.every((element) => element.isTypeOnly)));
        add(node.moduleSpecifier.text, typeOnly, false);
      } else if (ts.isExportDeclaration(node) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
        add(node.moduleSpecifier.text, node.isTypeOnly, false);
      } else if (ts.isCallExpression(node) && node.arguments.length === 1 && ts.isStringLiteral(node.arguments[0])) {
        if (node.expression.kind === ts.SyntaxKind.ImportKeyword) add(node.arguments[0].text, false, true);
        else if (ts.isIdentifier(node.expression) && node.expression.text === 'require') add(node.arguments[0].text, false, inFunction);
      } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) {
        add(node.argument.literal.text, true, false);
      }
      const entersFunction = inFunction || ts.isFunctionLike(node);
      ts.forEachChild(node, (child) => visit(child, entersFunction));
    };
    visit(source);
    graph.set(file, edges);
  }
  return graph;
}

/** The import cycles (strongly connected components of more than one module, or a module importing itself), each sorted. */
export function importCycles(graph: ImportGraph): string[][] {
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  const connect = (node: string) => {
    index.set(node, counter);
    low.set(node, counter);
    counter += 1;
    stack.push(node);
    onStack.add(node);
    for (const { to } of graph.get(node) ?? []) {
      if (!graph.has(to)) continue;
      if (!index.has(to)) {
        connect(to);
        low.set(node, Math.min(low.get(node)!, low.get(to)!));
      } else if (onStack.has(to)) low.set(node, Math.min(low.get(node)!, index.get(to)!));
    }
    if (low.get(node) === index.get(node)) {
      const component: string[] = [];
      let member: string;
      do {
        member = stack.pop()!;
        onStack.delete(member);
        component.push(member);
      } while (member !== node);
      const selfImport = (graph.get(node) ?? []).some(({ to }) => to === node);
      if (component.length > 1 || selfImport) cycles.push(component.sort());
    }
  };
  for (const node of graph.keys()) if (!index.has(node)) connect(node);
  return cycles;
}

/** Every module loaded when `entry` loads: static, non-type imports followed transitively. */
export function loadedWith(graph: ImportGraph, entry: string): Set<string> {
  const loaded = new Set<string>([entry]);
  const pending = [entry];
  while (pending.length > 0) {
    for (const { to, typeOnly, dynamic } of graph.get(pending.pop()!) ?? []) {
      if (typeOnly || dynamic || loaded.has(to)) continue;
      loaded.add(to);
      pending.push(to);
    }
  }
  return loaded;
}
