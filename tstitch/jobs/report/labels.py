"""Labels beside a plot's points, where they overlap nothing."""
from matplotlib.transforms import Bbox

# label positions tried around a point, in points: (dx, dy, horizontal, vertical alignment)
OFFSETS = [(4, 3, "left", "bottom"), (4, -3, "left", "top"), (-4, 3, "right", "bottom"), (-4, -3, "right", "top"),
           (0, 7, "center", "bottom"), (0, -7, "center", "top"), (7, 0, "left", "center"), (-7, 0, "right", "center")]


def place_labels(ax, points, texts, fontsize=6):
    """Label data ``points`` with ``texts`` where a label overlaps no other label and no point and stays inside
    the axes (the first free position of ``OFFSETS``); a label with no free position is left out. Call it after
    the figure's layout is final. Returns the placed annotations."""
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    r = 2.5 * ax.figure.dpi / 72  # a marker's radius in pixels
    taken = [Bbox.from_extents(x - r, y - r, x + r, y + r) for x, y in ax.transData.transform(points)]
    placed = []
    for point, text in zip(points, texts):
        for dx, dy, ha, va in OFFSETS:
            a = ax.annotate(text, point, textcoords="offset points", xytext=(dx, dy), ha=ha, va=va,
                            fontsize=fontsize)
            box = a.get_window_extent(renderer).padded(1)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(t) for t in taken):
                taken.append(box)
                placed.append(a)
                break
            a.remove()
    return placed
