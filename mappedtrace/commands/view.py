"""``mappedtrace view (PID | FILE) [AFTER] -o heap.html``: a self-contained heap viewer page."""
from __future__ import annotations

import click

from ._analysis_opts import analyse_arg, max_memory_option, open_private, output_path, print_warnings, roots_option
from ..errors import MappedTraceError


@click.command(help="Write one self-contained HTML page (no server): type histogram, dominator-tree "
                    "icicle with retained sizes, paths to the roots of a selected object, holders; "
                    "given a second snapshot AFTER, also the growth from the first to it. The page "
                    "shows the second snapshot's heap.")
@click.argument("what")
@click.argument("after", required=False)
@click.option("-o", "--output", required=True, metavar="FILE.html", callback=output_path)
@roots_option
@max_memory_option
def command(what: str, after: str | None, output: str, roots_mode: str) -> int:
    from ..analyses.dominators import dominator_tree
    from ..analyses.heapview import view_data
    from ..reporters import html_view

    if not output.endswith((".html", ".htm")):
        raise MappedTraceError(f"{output}: the output must end in .html")
    a = analyse_arg(what, roots_mode=roots_mode, leaks=False)
    diff_doc = None
    warnings = list(a.warnings)
    if after:
        from ..analyses.diff import HeapState, check_same_process, diff
        from ..reporters.heap_report import diff_dict
        b = analyse_arg(after, roots_mode=roots_mode, leaks=False)
        sa, sb = HeapState.of(a, what), HeapState.of(b, after)
        check_same_process(sa, sb)
        diff_doc = diff_dict(diff(sa, sb), 100)
        warnings += b.warnings
        a, dom = b, sb.dom
    else:
        dom = dominator_tree(a.graph)
    from ..session import precision_figures
    prec = precision_figures(a.roots, a.graph, a.heap, roots_mode)
    t = a.target
    title = f"{getattr(t, 'exe', '') or '?'} (PID {getattr(t, 'pid', '?')}): {after or what}"
    data = view_data(a.graph, dom, title=title, precision=prec, diff=diff_doc)
    with open_private(output) as f:
        html_view.render(data, f)
    click.echo(f"wrote {output}: {len(a.graph)} objects, {len(data['tree'])} in the sampled tree", err=True)
    print_warnings(warnings)
    return 0
