"""Steady churn: lots of short-lived cyclic garbage and a bounded working set; GC-heavy."""
import time

from _harness import Run, churn


class Node:
    def __init__(self, parent=None):
        self.parent = parent
        self.children = []
        if parent is not None:
            parent.children.append(self)


def tree(depth=3, width=4):
    root = Node()
    level = [root]
    for _ in range(depth):
        level = [Node(p) for p in level for _ in range(width)]
    return root


def main():
    run = Run("ok_churn", leaking=False, duration=600)
    working_set = [tree() for _ in range(50)]
    i = 0
    while run.running():
        t = time.monotonic()
        # Busy about a third of the time, whatever the scale.
        while time.monotonic() - t < 0.02:
            churn(500)
            working_set[i % 50] = tree()     # replace, never grow
            i += 1
        time.sleep(0.04)
    run.finish()


if __name__ == "__main__":
    main()
