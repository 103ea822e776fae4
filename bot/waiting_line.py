"""A first-come line whose members may leave from anywhere and still learn their place in O(log n).

Why not a list and `index()`: with a thousand waiting, scanning the line for every waiter on every
change blocks the event loop. Each member instead holds a ticket (its arrival number); its place is
the tickets between the front and it, minus those of members who left from the middle, which a
Fenwick tree counts in O(log n) (en.wikipedia.org/wiki/Fenwick_tree). Tickets are renumbered now and
then (`_compact`), in O(n) once per n arrivals, so neither the tree nor the line grows without bound.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

MIN_TICKETS = 64  # tickets handed out between two compactions, at the least


class Place:
    """A member's spot in a line; subclass it to carry what the member needs."""

    __slots__ = ("in_line", "ticket")

    def __init__(self) -> None:
        self.ticket = -1
        self.in_line = False


class _LeaveCounts:
    """How many members left with a ticket below a given one: a Fenwick tree of prefix sums."""

    def __init__(self, size: int) -> None:
        self._tree = [0] * (size + 1)

    @property
    def size(self) -> int:
        return len(self._tree) - 1

    def add(self, ticket: int) -> None:
        index = ticket + 1
        while index < len(self._tree):
            self._tree[index] += 1
            index += index & -index

    def below(self, ticket: int) -> int:
        total = 0
        index = ticket
        while index > 0:
            total += self._tree[index]
            index -= index & -index
        return total


class WaitingLine:
    """Members in arrival order: join at the back, served from the front, free to leave from anywhere."""

    def __init__(self) -> None:
        self._places: deque[Place] = deque()  # arrival order; members who left stay until the front passes them
        self._left = _LeaveCounts(MIN_TICKETS)
        self._next_ticket = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def join(self, place: Place) -> None:
        if self._next_ticket >= self._left.size:
            self._compact()
        place.ticket = self._next_ticket
        place.in_line = True
        self._next_ticket += 1
        self._places.append(place)
        self._size += 1

    def leave(self, place: Place) -> None:
        """`place` gives up its spot; everyone behind it moves up one."""
        if not place.in_line:
            return
        place.in_line = False
        self._size -= 1
        self._left.add(place.ticket)
        self._drop_gone_front()

    def pop_front(self) -> Place | None:
        """The member at the front, now out of the line; None if nobody is waiting."""
        self._drop_gone_front()
        if not self._places:
            return None
        place = self._places.popleft()
        place.in_line = False
        self._size -= 1
        self._drop_gone_front()
        return place

    def position(self, place: Place) -> int:
        """1 for the member at the front. `place` must be in the line."""
        front = self._places[0].ticket  # the front member is always one still in line
        return place.ticket - front + 1 - (self._left.below(place.ticket) - self._left.below(front))

    def drain(self) -> Iterator[Place]:
        """Every member still in line, front first, each taken out of it."""
        while (place := self.pop_front()) is not None:
            yield place

    def _drop_gone_front(self) -> None:
        while self._places and not self._places[0].in_line:
            self._places.popleft()

    def _compact(self) -> None:
        """Renumber the members still in line 0..n-1 and forget who left: O(n), after at least n arrivals."""
        members = [place for place in self._places if place.in_line]
        self._places = deque(members)
        for ticket, place in enumerate(members):
            place.ticket = ticket
        self._next_ticket = len(members)
        self._left = _LeaveCounts(max(MIN_TICKETS, 2 * len(members)))
