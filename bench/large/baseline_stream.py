"""Streaming baseline of the large-document benchmark: the same split and mapping, by hand.

    python bench/large/baseline_stream.py orders.xml

Reads the file with lxml's iterparse, maps each <Order> to the same <Line .../> as
bench/large/split-map.yaml and frees each record once mapped, so memory stays flat whatever the
file size. Prints the number of records mapped.
"""

from __future__ import annotations

import sys

from lxml import etree


def main() -> None:
    count = 0
    size = 0
    for _, el in etree.iterparse(sys.argv[1], events=("end",), tag="Order", resolve_entities=False,
                                 no_network=True, load_dtd=False):
        amount = int(el.findtext("Qty") or 0) * float(el.findtext("Price") or 0)
        line = f'<Line order="{el.get("id")}" customer="{el.findtext("Customer")}" amount="{amount:.2f}"/>'
        size += len(line)
        count += 1
        el.clear(keep_tail=True)
        parent = el.getparent()
        while parent is not None and el.getprevious() is not None:
            del parent[0]
    print(f"{count} records, {size} bytes mapped")


if __name__ == "__main__":
    main()
