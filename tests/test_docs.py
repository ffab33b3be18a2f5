"""The documentation's links resolve: README.md and docs/*.md.

Every relative link and image (`[text](target)`, `![alt](target)`, reference definitions
`[label]: target`, HTML `<img src=...>` / `<a href=...>`) must name a file or folder that exists
relative to the markdown file, inside the repository, and a `#anchor` must match a heading of the
target file by GitHub's slug rule. Absolute URLs (http:, https:, mailto:) are not fetched. Links
inside fenced code blocks and inline code are not links. Standard library only, no network.
"""
import json
import re
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_BYTES = 13_000
SKIPPED_SCHEMES = ("http:", "https:", "mailto:")

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_REF_DEFINITION = re.compile(r"^ {0,3}\[([^\]]+)\]:[ \t]*(<[^>]*>|\S+)", re.MULTILINE)
_REF_USE = re.compile(r"\[([^\]]*)\]\[([^\]]*)\]")
_HTML_TARGET = re.compile(r"<(?:img|a|source)\b[^>]*?\b(?:src|href)\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s>]+)", re.IGNORECASE)
_HTML_ID = re.compile(r"<[a-z][^>]*?\b(?:id|name)\s*=\s*(\"[^\"]*\"|'[^']*')", re.IGNORECASE)


def blank_fenced_code(text: str) -> str:
    """The text with every line of a fenced code block (fences included) emptied; line numbers kept."""
    lines = text.split("\n")
    fence = None
    for i, line in enumerate(lines):
        match = _FENCE.match(line)
        if fence is None:
            if match:
                fence = match.group(1)
                lines[i] = ""
        else:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) \
                    and not line.strip().lstrip(fence[0]):
                fence = None
            lines[i] = ""
    return "\n".join(lines)


def blank_code_spans(text: str, keep_content: bool = False) -> str:
    """Inline code spans replaced by spaces (newlines kept), or by their bare content."""
    out, i = [], 0
    while i < len(text):
        if text[i] != "`":
            out.append(text[i])
            i += 1
            continue
        j = i
        while j < len(text) and text[j] == "`":
            j += 1
        run = text[i:j]
        close = re.compile(r"(?<!`)" + run + r"(?!`)").search(text, j)
        if close is None or "\n\n" in text[j:close.start()]:
            out.append(run)
            i = j
            continue
        content = text[j:close.start()]
        out.append(content if keep_content else re.sub(r"[^\n]", " ", content))
        out.append("" if keep_content else " " * (2 * len(run)))
        i = close.end()
    return "".join(out)


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower-case, punctuation dropped except hyphens
    (and underscores, which GitHub keeps), spaces to hyphens."""
    text = blank_code_spans(heading, keep_content=True)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)                      # HTML tags
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def heading_anchors(text: str) -> set:
    """Every anchor a markdown file defines: its headings' slugs (with GitHub's -1, -2 for
    repeats) and explicit HTML id= / name= attributes."""
    anchors, seen = set(), {}
    for line in blank_fenced_code(text).split("\n"):
        match = _ATX_HEADING.match(line)
        if match:
            slug = github_slug(match.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    for match in _HTML_ID.finditer(text):
        anchors.add(match.group(1)[1:-1])
    return anchors


def _inline_targets(text: str):
    """(line number, target) of every `[...](target)` and `![...](target)`."""
    for match in re.finditer(r"\]\(", text):
        start = match.end()
        while start < len(text) and text[start] in " \t\n":
            start += 1
        if start < len(text) and text[start] == "<":
            end = text.find(">", start)
            if end < 0:
                continue
            target = text[start + 1:end]
        else:
            depth, end = 0, start
            while end < len(text) and not text[end].isspace():
                if text[end] == "(":
                    depth += 1
                elif text[end] == ")":
                    if depth == 0:
                        break
                    depth -= 1
                end += 1
            target = text[start:end]
        yield text.count("\n", 0, match.start()) + 1, target


def _normalise_label(label: str) -> str:
    return " ".join(label.split()).lower()


def link_problems(text: str, md_path: Path, root: Path = ROOT) -> list:
    """The broken links of one markdown text, read as if it were the file md_path (its links are
    relative to md_path's folder): a list of 'FILE:LINE: target: reason' strings."""
    md_path = Path(md_path).resolve()
    root = Path(root).resolve()
    prose = blank_code_spans(blank_fenced_code(text))
    targets = list(_inline_targets(prose))
    definitions = {}
    for match in _REF_DEFINITION.finditer(prose):
        target = match.group(2)
        target = target[1:-1] if target.startswith("<") else target
        definitions[_normalise_label(match.group(1))] = target
        targets.append((prose.count("\n", 0, match.start()) + 1, target))
    for match in _HTML_TARGET.finditer(prose):
        target = match.group(1).strip("\"'")
        targets.append((prose.count("\n", 0, match.start()) + 1, target))

    problems = []
    name = md_path.relative_to(root) if md_path.is_relative_to(root) else md_path
    for match in _REF_USE.finditer(prose):
        label = _normalise_label(match.group(2) or match.group(1))
        if label not in definitions:
            line = prose.count("\n", 0, match.start()) + 1
            problems.append(f"{name}:{line}: [{match.group(1)}][{match.group(2)}]: no definition of [{label}]")
    for line, target in targets:
        reason = _target_problem(target, md_path, text, root)
        if reason:
            problems.append(f"{name}:{line}: {target}: {reason}")
    return problems


def _target_problem(target: str, md_path: Path, own_text: str, root: Path):
    if not target:
        return "empty link target"
    if target.lower().startswith(SKIPPED_SCHEMES):
        return None
    path_part, _, anchor = target.partition("#")
    path_part = unquote(path_part.split("?", 1)[0])
    if path_part:
        if path_part.startswith("/"):
            return "absolute path (use a path relative to the markdown file)"
        resolved = (md_path.parent / path_part).resolve()
        if not resolved.is_relative_to(root):
            return "points outside the repository"
        if not resolved.exists():
            return "no such file"
    else:
        resolved = md_path
    if anchor:
        anchor = unquote(anchor)
        if resolved == md_path:
            target_text = own_text
        elif resolved.is_file() and resolved.suffix.lower() == ".md":
            target_text = resolved.read_text(encoding="utf-8")
        else:
            return "an #anchor on something that is not a markdown file"
        if anchor not in heading_anchors(target_text):
            return f"no heading with the anchor #{anchor}"
    return None


def markdown_files() -> list:
    return [README] + sorted((ROOT / "docs").glob("*.md"))


# ---------------------------------------------------------------------------------------------


def test_every_relative_link_and_image_resolves():
    problems = []
    for path in markdown_files():
        problems += link_problems(path.read_text(encoding="utf-8"), path)
    assert not problems, "broken links in the documentation:\n" + "\n".join(problems)


def test_the_checker_reports_broken_links_and_ignores_code(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## Which loss?\n\n## What `eval` measures\n")
    (tmp_path / "docs" / "figure.png").write_bytes(b"\x89PNG")
    text = "\n".join([  # noqa: FLY002 - one markdown line per list item reads better
        "# Title",
        "",
        "## Own section",
        "",
        "[good](docs/page.md) [good anchor](docs/page.md#which-loss) ![good image](docs/figure.png)",
        "[code anchor](docs/page.md#what-eval-measures) [own](#own-section) [web](https://example.com/x.md)",
        "[mail](mailto:a@example.com) [ref][good-ref] <img src=\"docs/figure.png\" alt=\"x\">",
        "",
        "[broken](docs/missing.md) and ![broken image](docs/missing.png)",
        "[bad anchor](docs/page.md#which-loss-1) and [bad own anchor](#nowhere)",
        "[undefined ref][nothing] <img src=\"docs/gone.png\">",
        "[outside](../../../etc/passwd) [anchor on image](docs/figure.png#x)",
        "",
        "```markdown",
        "[in a fence](docs/fenced-missing.md)",
        "```",
        "",
        "   ~~~",
        "   ![in a tilde fence](docs/tilde-missing.png)",
        "   ~~~",
        "",
        "Inline code is not a link: `[x](docs/code-missing.md)`.",
        "",
        "[good-ref]: docs/page.md#a-page",
        "[bad-ref]: docs/ref-missing.md",
    ])
    problems = link_problems(text, tmp_path / "README.md", root=tmp_path)
    report = "\n".join(problems)
    for broken in ("docs/missing.md", "docs/missing.png", "docs/page.md#which-loss-1", "#nowhere",
                   "[nothing]", "docs/gone.png", "docs/ref-missing.md", "../../../etc/passwd",
                   "docs/figure.png#x"):
        assert broken in report, f"{broken} not reported:\n{report}"
    for fine in ("fenced-missing", "tilde-missing", "code-missing", "example.com", "mailto", "#own-section",
                 "#which-loss:", "#what-eval-measures", "#a-page"):
        assert fine not in report, f"{fine} wrongly reported:\n{report}"
    assert len(problems) == 9, report


def test_github_slugs():
    assert github_slug("Which loss?") == "which-loss"
    assert github_slug("Your own images, at any size") == "your-own-images-at-any-size"
    assert github_slug("What `ganforge eval` measures, and with which features") == \
        "what-ganforge-eval-measures-and-with-which-features"
    assert github_slug("Text to image in two stages (StackGAN)") == "text-to-image-in-two-stages-stackgan"
    assert github_slug("Speed and scale: GPUs, mixed precision") == "speed-and-scale-gpus-mixed-precision"
    assert github_slug("A [linked](x.md) heading") == "a-linked-heading"
    assert heading_anchors("# Tests\n\n## Tests\n\n```\n# not a heading\n```\n") == {"tests", "tests-1"}


def test_readme_starts_with_the_title_and_the_two_quick_start_commands():
    lines = README.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "# ganforge"
    rest = [line for line in lines[1:]]
    first = next(i for i, line in enumerate(rest) if line.strip())
    assert _FENCE.match(rest[first]), "the first thing after the title must be a fenced block"
    end = next(i for i in range(first + 1, len(rest)) if _FENCE.match(rest[i]))
    block = [line for line in rest[first + 1:end] if line.strip()]
    assert len(block) == 2, block
    assert re.match(r"make demo\s+# \S", block[0]), block[0]
    assert re.match(r"make test\s+# \S", block[1]), block[1]


def test_readme_is_short():
    size = README.stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail into a docs/ page"


# --- the numbers the documentation quotes come from results files ----------------------------
#
# A measured number (a decimal, a percentage, a ratio such as 1.12x, a count written with thousands
# separators, or an integer after FID / KID / MSE) must sit in a block of text that links the results
# file(s) it came from (benchmarks/results/*.json, or a gallery figure's record, docs/gallery/*.json, both
# written by committed scripts with their command, commit, date and processor), and must be one of that file's numbers as the text
# rounds it (0.6% may be stored as 0.006). A block is a paragraph, a table or a list; a table or list
# also reads the links of the paragraph just before it. A number that is a setting, not a measurement,
# is written as one (`name = 0.999`) or listed in the page's `<!-- settings: 0.999, 0.02 -->` comment.

_NUMBER = re.compile(r"(?<![\w.])(?<![A-Za-z]-)(?<![=≈~±]\s)(?<![=≈~±])"
                     r"(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)(\s?%|x(?!\w))?(?!\w|\.\d|-[A-Za-z])")
_SCORE_WORD = re.compile(r"(FID|KID|MSE)\s+$")
_SETTINGS = re.compile(r"<!--\s*settings:(.*?)-->", re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_JSON_LINK = re.compile(r"\]\(\s*<?([^)\s>#]+\.json)")
RESULTS_FOLDERS = ("benchmarks/results", "docs/gallery")  # what the benchmarks and scripts/gallery.py write


def quoted_numbers(text: str):
    """(line, token, results files linked) for every measured-looking number of a markdown text, with the
    page's declared settings left out."""
    settings = {s for comment in _SETTINGS.findall(text) for s in re.split(r",?\s+", comment.strip()) if s}
    prose = blank_code_spans(blank_fenced_code(_COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)))
    offset, previous_links = 0, []
    for block in re.split(r"(\n[ \t]*\n)", prose):
        start, offset = offset, offset + len(block)
        if not block.strip():
            continue
        links = _JSON_LINK.findall(block)
        first = block.lstrip()
        if first.startswith(("|", "- ", "* ")) or re.match(r"\d+\. ", first):
            links = links + previous_links
        elif not first.startswith("#"):
            previous_links = links
        if first.startswith("#"):
            continue
        readable = re.sub(r"\]\([^)]*\)", "]", block)  # link targets are not prose; keep the length of lines
        readable = re.sub(r"<[^>\n]*>", "", readable)
        for match in _NUMBER.finditer(readable):
            number, suffix = match.group(1), (match.group(2) or "").strip()
            token = number + suffix
            measured = "," in number or "." in number or suffix or \
                _SCORE_WORD.search(readable[max(0, match.start() - 6):match.start()])
            if measured and token not in settings and number not in settings:
                yield prose.count("\n", 0, start) + 1 + readable.count("\n", 0, match.start()), token, links


def results_numbers(path: Path) -> list:
    """Every number a results file holds: its values, the numbers inside its strings, its numeric keys."""
    found = []

    def walk(node):
        if isinstance(node, bool):
            return
        if isinstance(node, int | float):
            found.append(float(node))
        elif isinstance(node, str):
            found.extend(float(n.replace(",", "")) for n in re.findall(r"\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?", node))
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(key)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(path.read_text()))
    return found


def rounds_to(value: float, token: str) -> bool:
    """Does the text's token (1,761  0.29  92.6%  1.12x) show this stored value, as it rounds it?"""
    from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

    number = token.rstrip("%x").replace(",", "")
    shown = Decimal(number)
    places = Decimal(1).scaleb(shown.as_tuple().exponent)
    scales = (1, 100) if token.endswith("%") else (1,)
    decimals = max(0, -shown.as_tuple().exponent)
    for scale in scales:
        stored = Decimal(repr(abs(value))) * scale
        if any(stored.quantize(places, rounding=r) == shown for r in (ROUND_HALF_UP, ROUND_HALF_EVEN)):
            return True
        if Decimal(f"{abs(value) * scale:.{decimals}f}") == shown:  # as Python prints the float itself
            return True
    return False


def number_problems(text: str, md_path: Path, root: Path = ROOT) -> list:
    """'FILE:LINE: token: reason' for every quoted number with no results file linked beside it, or that
    none of its files holds."""
    md_path, root = Path(md_path).resolve(), Path(root).resolve()
    name = md_path.relative_to(root) if md_path.is_relative_to(root) else md_path
    cache, problems = {}, []
    for line, token, links in quoted_numbers(text):
        files = [f for link in links if any((f := (md_path.parent / link).resolve()).is_relative_to(root / folder)
                                            for folder in RESULTS_FOLDERS)]
        if not files:
            problems.append(f"{name}:{line}: {token}: no results file linked beside it")
            continue
        for f in files:
            if f not in cache:
                cache[f] = results_numbers(f) if f.is_file() else []
        if not any(rounds_to(v, token) for f in files for v in cache[f]):
            shown = ", ".join(f.name for f in files)
            problems.append(f"{name}:{line}: {token}: not in {shown}")
    return problems


def test_the_number_checker_finds_unsourced_and_edited_numbers(tmp_path):
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "run.json").write_text(
        '{"fid": 183.0812, "recall": 0.6449, "accuracy": 0.906, "steps": 7755, "speedup": 1.1249,'
        ' "note": "measured 12.5 images/s", "sizes": {"64": 1}}')
    (tmp_path / "docs").mkdir()
    link = "([results](../benchmarks/results/run.json))"
    text = "\n".join([
        "# Page", "<!-- settings: 0.999, 2,500 -->", "",
        f"FID 183 and recall 0.64 after 7,755 steps, 90.6% in class, 1.12x faster, 12.5 images/s {link}.",
        "", "| model | FID |", "|---|---:|", "| dcgan | 183.1 |", "",
        "FID 184 here has no link, nor has 0.5 or 1,000; ema_decay = 0.999 is a setting, and so are 0.999 and 2,500.",
        "", f"Edited: 0.65 recall, 92% accuracy, 7,756 steps, FID 183.2 {link}.",
        "", "Not numbers: AVX-512, 2-core, 64 px, 2e-4, `0.123` in code, version 2.14.1.",
    ])
    problems = number_problems(text, tmp_path / "docs" / "page.md", root=tmp_path)
    report = "\n".join(problems)
    assert [p.split(": ")[1] for p in problems] == ["184", "0.5", "1,000", "0.65", "92%", "7,756", "183.2"], report
    assert "docs/page.md:10: 184: no results file linked" in report
    assert "docs/page.md:12: 0.65: not in run.json" in report


def test_rounding_as_the_text_shows_it():
    assert rounds_to(0.906, "90.6%") and rounds_to(90.6, "90.6%") and not rounds_to(0.906, "90.7%")
    assert rounds_to(653.4962, "653") and not rounds_to(653.4962, "654")
    assert rounds_to(0.125, "0.12") and rounds_to(0.125, "0.13")  # a tie may be shown either way
    assert rounds_to(1761, "1,761") and rounds_to(1.1249, "1.12x") and not rounds_to(1.1249, "1.13x")


def test_every_number_the_docs_quote_comes_from_its_results_file():
    problems = []
    for path in markdown_files():
        problems += number_problems(path.read_text(encoding="utf-8"), path)
    assert not problems, "numbers without their results file, or unlike it:\n" + "\n".join(problems)


def test_an_edited_number_in_the_readme_fails():
    text = README.read_text(encoding="utf-8")
    quoted = [(token, links) for _, token, links in quoted_numbers(text) if links]
    assert len(quoted) >= 10, quoted  # the README quotes its headline figures from files
    token = quoted[0][0]
    number = token.rstrip("%x")
    digits = number.replace(",", "").replace(".", "")
    edited = number[:-1] + str((int(number[-1]) + 3) % 10)  # its last digit changed
    assert digits.isdigit() and edited != number
    problems = number_problems(text.replace(token, edited + token[len(number):], 1), README)
    assert any(f": {edited}" in p and "not in" in p for p in problems), problems
