"""Every string a submission controls lands on the board as text: attacks as run documents.

Each attack is a run document whose names, provenance or failure texts carry
it. README.md is rendered with cmark-gfm, GitHub's own Markdown library (raw
HTML let through, as GitHub lets most of it through), and the page is parsed
as HTML: the attack must show up as the text it is, inside the cell it came
in, and form nothing: no table, heading, image, link, comment, script, or
math.
"""
from __future__ import annotations

import html.parser
import re

import pytest

import board_runs as runs
from tinytorch.arena import results
from tinytorch.arena.board import render

cmarkgfm = pytest.importorskip("cmarkgfm")
from cmarkgfm.cmark import Options  # noqa: E402

#: the only links the board may hold: to its own anchors and files (no scheme, no host).
OWN_LINK = re.compile(r"^(?![A-Za-z][A-Za-z0-9+.-]*:)(?!//)\S+$")
#: attack -> (field of backends carrying `payload`, payload); the same field with a plain
#: payload is the benign twin whose page structure the attack must not change.
ATTACKS = {
    "forged ranking table in a reason": (
        lambda s: [runs.backend("forger", 1.0, failure=("wrong", "wrong answer" + s))],
        runs.FORGED_TABLE),
    "external image in a distribution": (
        lambda s: [runs.backend("imager", 1.0, distribution=s)], runs.EXTERNAL_IMAGE),
    "html comment in a version": (
        lambda s: [runs.backend("commenter", 1.0, version=s)], runs.HIDING_COMMENT),
    "cyrillic look-alike of optimized": (
        lambda s: [runs.backend(s, 3.0)], runs.LOOKALIKE),
    "mathtext in a name": (lambda s: [runs.backend(s, 2.0)], runs.MATHTEXT),
    "newlines and pipes in an exception": (
        lambda s: [runs.backend("piper", 1.0, failure=("error", "raised " + s))],
        runs.PIPES_AND_NEWLINES),
    "script in a name": (lambda s: [runs.backend(s, 1.1)], runs.SCRIPT),
    "links in a load error": (lambda s: [runs.backend("linker", 1.0, failure=s)], runs.LINKS),
    "links in an entry point": (
        lambda s: [runs.backend("pointer", 1.0, entry_point=s)], runs.LINKS),
    "bidi override in a location": (
        lambda s: [runs.backend("bidi", 1.0, location=s)], runs.BIDI),
    "a page id as a name": (lambda s: [runs.backend(s, 1.0)], "ranking"),
    "a matplotlib id as a name": (lambda s: [runs.backend(s, 1.0)], "figure_1"),
    "a 5000-character name": (lambda s: [runs.backend(s, 0.7)], "x" * 5000),
    "a 5000-character version": (lambda s: [runs.backend("long", 0.7, version=s)], "9" * 5000),
}
PLAIN = "plain"


def _render(folder, docs):
    paths = runs.write(folder / "results", docs)
    render([(str(p), results.load(p)) for p in paths], folder / "board")
    return (folder / "board" / "README.md").read_text(), (folder / "board" / "index.html").read_text()


class Page(html.parser.HTMLParser):
    """An HTML document's elements (outside charts), attributes, cell and heading texts,
    scripts and comments."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs, self.comments, self.headings = [], [], [], []
        self.cells, self.scripts, self._open, self._svg = [], [], [], 0
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self._svg += tag == "svg"
        if not self._svg:
            self.tags.append(tag)
        self.attrs.extend((tag, k, v) for k, v in attrs)
        if tag in ("td", "th", "h1", "h2", "h3", "script"):
            self._open.append([tag, ""])

    def handle_endtag(self, tag):
        self._svg -= tag == "svg"
        if self._open and self._open[-1][0] == tag:
            tag, text = self._open.pop()
            {"script": self.scripts, "td": self.cells, "th": self.cells}.get(
                tag, self.headings).append(text)

    def handle_data(self, data):
        for element in self._open:
            element[1] += data

    def handle_comment(self, data):
        self.comments.append(data)


def _markdown(readme) -> Page:
    """README.md as GitHub's cmark-gfm renders it, raw HTML let through."""
    return Page(cmarkgfm.github_flavored_markdown_to_html(readme, options=Options.CMARK_OPT_UNSAFE))


def _assert_safe(page: Page):
    links = [v for _, k, v in page.attrs if k in ("href", "src", "xlink:href")]
    assert not [link for link in links if not OWN_LINK.match(link or "")], links
    assert not [(t, k) for t, k, _ in page.attrs if k.startswith("on")]
    assert "img" not in page.tags and not page.comments, page.comments


@pytest.mark.parametrize("attack", ATTACKS)
def test_an_attack_in_a_run_file_forms_nothing_on_the_board(tmp_path, attack):
    field, payload = ATTACKS[attack]
    doc = runs.run_document(field(payload))
    readme, page_html = _render(tmp_path / "attack", [doc])
    plain_readme, plain_html = _render(tmp_path / "plain", [runs.run_document(field(PLAIN))])

    markdown, plain_markdown = _markdown(readme), _markdown(plain_readme)
    _assert_safe(markdown)
    assert markdown.tags == plain_markdown.tags        # no table, row, heading, link, image...
    assert markdown.headings == plain_markdown.headings
    assert not re.search(r"(?<!\\)\$", readme), "a bare $ starts GitHub math"

    page, plain_page = Page(page_html), Page(plain_html)
    _assert_safe(page)
    assert page.tags == plain_page.tags
    assert page.scripts == plain_page.scripts and "pwned" not in " ".join(page.scripts)
    ids = [v for _, k, v in page.attrs if k == "id"]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)

    for text in (readme, page_html):
        assert "\u202e" not in text and "x" * 200 not in text and "9" * 200 not in text
    for name in doc["backends"]:
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,39}", name):   # shown as ascii(), never raw
            if not name.isascii():
                assert name not in readme and name not in page_html
            shown = ascii(name)[:30]
            assert any(shown in cell for cell in markdown.cells), shown
            assert any(shown in cell for cell in page.cells), shown


def test_the_look_alike_is_shown_escaped_beside_the_real_reference(tmp_path):
    field, payload = ATTACKS["cyrillic look-alike of optimized"]
    readme, page_html = _render(tmp_path, [runs.run_document(field(payload))])
    for cells in (_markdown(readme).cells, Page(page_html).cells):
        assert "'\\u043eptimized'" in cells and "optimized" in cells, cells


def test_a_forged_table_and_pipes_stay_inside_their_reason_cell(tmp_path):
    doc = runs.run_document([runs.backend("forger", 1.0, failure=("wrong", runs.FORGED_TABLE)),
                             runs.backend("piper", 1.0, failure=("error", runs.PIPES_AND_NEWLINES))])
    readme, page_html = _render(tmp_path, [doc])
    for cells in (_markdown(readme).cells, Page(page_html).cells):
        assert any("## Corrected final ranking" in c and "| 1 | mallory | 99.0 |" in c
                   for c in cells), cells
        assert any("bad | worse" in c and "| 1 | eve | 42 |" in c and "third line" in c
                   for c in cells), cells


def test_a_comment_opened_by_a_name_hides_nothing(tmp_path):
    """A name at the start of a note line would open an HTML block that hides the rest."""
    first = runs.run_document([runs.backend("<!--", 1.0)])
    second = runs.run_document([runs.backend("<!--", 1.2)], run_id="20261128T000000Z-second",
                               date="2026-11-28T00:00:00+00:00")
    readme, page_html = _render(tmp_path, [first, second])
    for page in (_markdown(readme), Page(page_html)):
        assert not page.comments
        assert any("Fail" in h for h in page.headings), page.headings


def test_charts_draw_names_that_look_like_mathtext(tmp_path):
    field, payload = ATTACKS["mathtext in a name"]
    _, page_html = _render(tmp_path, [runs.run_document(field(payload))])
    chart_text = " ".join(re.findall(r"<text[^>]*>([^<]*)</text>", page_html))
    assert "'$x^{$'" in chart_text


def test_the_whole_hostile_field_renders_safely(tmp_path):
    readme, page_html = _render(tmp_path, [runs.hostile_run()])
    _assert_safe(_markdown(readme))
    page = Page(page_html)
    _assert_safe(page)
    assert "pwned" not in " ".join(page.scripts)
