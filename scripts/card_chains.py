"""The training command chain of each shipped model, read from its card (models/NAME.json).

    python scripts/card_chains.py                       # print the chains as markdown
    python scripts/card_chains.py --write docs/training.md

With --write, the part of the page between the markers `<!-- card-chains -->` and
`<!-- /card-chains -->` is replaced by the chains of the cards as they are, so the guide names
exactly the commands the cards hold (tests/test_manual.py checks that it does). Run folders are
written as `runs/NAME` whatever folder the training used.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
BEGIN, END = "<!-- card-chains -->", "<!-- /card-chains -->"


def shipped_cards() -> list[Path]:
    """The cards of the trained networks (the .int8 and .fp16 files share their network's chain)."""
    return sorted(p for p in MODELS.glob("*.json") if not re.search(r"\.(int8|fp16)\.json$", p.name))


def chain(card: dict) -> list[str]:
    """The card's training commands, one per step, with run folders as runs/NAME."""
    t = card["training"]
    steps = [s.strip() for s in t["command"].split(" && ") if s.strip()]
    extra = t.get("shape_correction", {}).get("command")
    if extra:
        steps.append(extra)
    return [re.sub(r"(?<![\w.])/\S*?/fkp-runs/", "runs/", s) for s in steps]


def markdown() -> str:
    out = []
    for path in shipped_cards():
        card = json.loads(path.read_text())
        out.append(f"#### `{path.stem}`: {card.get('description', '').strip()}")
        out.append("")
        out.append("```bash")
        out.extend(chain(card))
        out.append("```")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description="Print (or write into a page) each shipped card's training chain.")
    ap.add_argument("--write", type=Path, metavar="PAGE", help="replace the chains between the markers of PAGE")
    a = ap.parse_args()
    text = markdown()
    if not a.write:
        print(text, end="")
        return
    page = a.write.read_text()
    if BEGIN not in page or END not in page:
        raise SystemExit(f"{a.write}: no {BEGIN} ... {END} markers to write between")
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    a.write.write_text(f"{head}{BEGIN}\n\n{text}\n{END}{tail}")
    print(f"wrote the chains of {len(shipped_cards())} cards into {a.write}")


if __name__ == "__main__":
    main()
