"""`make lint`: fail when the import graph of app/ and tasks/ has a cycle (import-linter's contracts
check the layers; this checks that no modules import each other round in a loop).

grimp (import-linter's own graph builder) lists the imports; Tarjan's algorithm finds the cycles."""

import sys
from pathlib import Path

import grimp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def strongly_connected(graph, modules):
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def visit(m):
        index[m] = low[m] = counter[0]
        counter[0] += 1
        stack.append(m)
        on_stack.add(m)
        for n in graph.find_modules_directly_imported_by(m):
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            group = []
            while True:
                n = stack.pop()
                on_stack.discard(n)
                group.append(n)
                if n == m:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for m in sorted(modules):
        if m not in index:
            visit(m)
    return found


def main():
    graph = grimp.build_graph("app", "tasks", cache_dir=None)
    cycles = strongly_connected(graph, graph.modules)
    for group in cycles:
        print("import cycle:", " <-> ".join(group))
        for a in group:
            for b in group:
                if a != b and graph.direct_import_exists(importer=a, imported=b):
                    lines = [str(d["line_number"]) for d in graph.get_import_details(importer=a, imported=b)]
                    print(f"    {a} -> {b} (line {', '.join(lines)})")
    print(f"import cycles: {len(cycles)}")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
