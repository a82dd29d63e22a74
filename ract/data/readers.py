"""Read raw interaction files (MovieLens, RecBole, Netflix Prize, MSD, any CSV) into one table.

Every reader returns a DataFrame with columns `user`, `item` (raw ids: int64 when every id is
an integer, else str) and `rating` (float64; NaN where the format has no rating).

Parsing uses pandas' C engine with explicit dtypes, so large files read fast. When that parse
fails, or yields values it must not (missing ids, non-numeric ratings), the file is scanned a
second time line by line to find the first bad line and say exactly what is wrong there; that
slower pass only runs on broken files.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator

import numpy as np
import pandas as pd

from ..errors import RactError

log = logging.getLogger("ract.data.readers")

FORMATS = ("ml-100k", "ml-1m", "ml-csv", "recbole", "netflix", "msd", "csv")

FORMAT_HELP = {
    "ml-100k": "MovieLens u.data: tab-separated 'user item rating timestamp', no header",
    "ml-1m": "MovieLens ratings.dat (ml-1m, ml-10m): 'UserID::MovieID::Rating::Timestamp'",
    "ml-csv": "MovieLens ratings.csv (ml-20m, ml-latest): header "
    "'userId,movieId,rating,timestamp'",
    "recbole": "RecBole atomic .inter: tab-separated, header 'user_id:token item_id:token ...'",
    "netflix": "Netflix Prize: mv_*.txt or combined_data_*.txt file, or a folder of them",
    "msd": "MSD Taste Profile train_triplets.txt: tab-separated 'user song count' "
    "(rating = count)",
    "csv": "any CSV/TSV: choose sep, header and columns {'user': ..., 'item': ..., 'rating': ...}",
}

_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*\Z")
_INTEGER = re.compile(r"\s*[+-]?\d+\s*\Z")
_NETFLIX_BATCH_BYTES = 64 << 20

# Only empty fields count as missing: ids such as 'NA' or 'null' stay ids.
_PANDAS = dict(
    engine="c",
    encoding="utf-8",
    encoding_errors="strict",
    keep_default_na=False,
    na_values=[""],
    index_col=False,
    skip_blank_lines=True,
    compression=None,
)


class _Invalid(Exception):
    """The fast parse found something wrong; the slow scan will say what."""


@dataclass
class _Layout:
    """How one delimited file is laid out, in logical fields (`::` counts as one separator)."""

    path: Path
    sep: str
    names: list[str]  # logical field names, for messages
    user: int
    item: int
    rating: int | None
    skip: int = 0  # physical lines before the first data line (header, leading blank lines)
    quoted: bool = False  # CSV quoting with '"' (generic csv only)
    what: str = ""  # e.g. "4 tab-separated fields (user, item, rating, timestamp)"
    id_str: set[int] = field(default_factory=set)  # logical fields to read as str

    @property
    def n(self) -> int:
        return len(self.names)


def read_interactions(
    path,
    fmt: str,
    *,
    columns: dict | None = None,
    sep: str | None = None,
    header: bool | None = None,
) -> pd.DataFrame:
    """Read a raw interaction file.

    Parameters
    ----------
    path : str or PathLike
        The file (for `netflix` also a folder of Netflix files).
    fmt : str
        One of `FORMATS`.
    columns : dict, optional
        `csv`: {'user': name-or-index, 'item': ..., 'rating': ... (optional)}.
        `recbole`: field names to use instead of user_id / item_id / rating.
    sep, header : optional
        `csv` only: field separator (default ',') and whether line 1 is a header (default True).

    Returns
    -------
    pandas.DataFrame
        Columns `user`, `item`, `rating` (float64, NaN where the format has none).

    Raises
    ------
    RactError
        Missing or unreadable file, or any malformed line (the message names the line).
    """
    if fmt not in FORMATS:
        raise RactError(f"unknown input format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    path = Path(path)
    if not path.exists():
        raise RactError(f"{path}: file not found")
    _check_options(fmt, columns, sep, header)

    if fmt == "netflix":
        frame = _read_netflix(path)
    else:
        if path.is_dir():
            raise RactError(f"{path}: is a folder; the {fmt} format expects a file")
        _first_lines(path, 1)  # empty file, archive or bad bytes: say so before parsing
        layout = _LAYOUTS[fmt](path, columns=columns, sep=sep, header=header)
        frame = _read_delimited(layout, double_colon=(fmt == "ml-1m"))
    log.info("read %s interactions from %s", f"{len(frame):,}", path)
    return _unify_float_ids(frame, path)


def _unify_float_ids(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Read `196.0` as `196` where `196` also occurs: one id written both ways (a column that
    went through floats for some of the rows) would otherwise count as two users or items.
    Ids become int64 when all are then integers, as for a file that never had the `.0`s."""
    unified = {}
    for role in ("user", "item"):
        ids = frame[role]
        if ids.dtype == np.int64:
            continue
        floaty = ids.str.fullmatch(r"[+-]?\d+\.0+")
        if not floaty.any():
            continue
        base = ids[floaty].str.replace(r"\.0+$", "", regex=True)
        twin = base[base.isin(ids[~floaty])]
        if twin.empty:
            continue
        ids = ids.copy()
        ids.loc[twin.index] = twin
        if ids.str.fullmatch(r"[+-]?\d{1,18}").all():
            ids = ids.astype(np.int64)
        frame[role] = ids
        unified[role] = twin.nunique()
    if unified:
        log.info(
            "%s: unified %s written both as integers and with a trailing .0 (196 and "
            "196.0 read as one id)",
            path,
            " and ".join(f"{n:,} {role} ids" for role, n in unified.items()),
        )
    return frame


def _check_options(fmt, columns, sep, header) -> None:
    given = [name for name, value in (("sep", sep), ("header", header)) if value is not None]
    if fmt != "csv" and given:
        raise RactError(f"option {given[0]!r} applies only to the 'csv' format, not {fmt!r}")
    if columns is not None and fmt not in ("csv", "recbole"):
        raise RactError(
            f"option 'columns' applies only to the 'csv' and 'recbole' formats, not {fmt!r}"
        )
    if columns is not None:
        if not isinstance(columns, dict):
            raise RactError(
                f"columns must be a mapping like {{'user': ..., 'item': ...}}, got {columns!r}"
            )
        unknown = sorted(set(columns) - {"user", "item", "rating"})
        if unknown:
            raise RactError(
                f"columns: unknown key {unknown[0]!r}; expected 'user', 'item', 'rating'"
            )
        missing = [key for key in ("user", "item") if columns.get(key) is None]
        if missing:
            raise RactError(
                f"columns: no {missing[0]!r} column given; both 'user' and 'item' are required"
            )


# ---------------------------------------------------------------------------------------------
# Layouts of the fixed formats


def _first_lines(path: Path, count: int) -> list[tuple[int, str]]:
    """Up to `count` non-blank lines as (line number, text), checking for archives and bad
    bytes."""
    out = []
    with open(path, "rb") as handle:
        _not_archive(path, handle.read(4))
        handle.seek(0)
        for number, line in enumerate(_decoded(handle, path), 1):
            if line.strip():
                out.append((number, line))
                if len(out) == count:
                    break
    if not out:
        raise RactError(f"{path}: file is empty")
    return out


def _not_archive(path: Path, start: bytes) -> None:
    if start.startswith(b"PK\x03\x04"):
        raise RactError(f"{path}: is a zip archive; extract it and pass the ratings file inside")
    if start.startswith(b"\x1f\x8b"):
        raise RactError(f"{path}: is gzip-compressed; decompress it first")


def _decoded(handle, path: Path) -> Iterator[str]:
    """Lines of a binary file as text without line ends; bad UTF-8 raises a RactError."""
    for number, raw in enumerate(handle, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RactError(
                f"{path}: line {number}: byte 0x{raw[exc.start]:02x} at column {exc.start + 1} "
                "is not valid UTF-8; save the file as UTF-8 text"
            ) from None
        if number == 1:
            line = line.removeprefix("\ufeff")
        yield line.rstrip("\r\n")


def _fixed(path: Path, sep: str, names: list[str], rating: int | None, sep_word: str) -> _Layout:
    layout = _Layout(path, sep, names, 0, 1, rating)
    layout.what = f"{len(names)} {sep_word}-separated fields ({', '.join(names)})"
    return layout


def _layout_ml100k(path, **_):
    return _fixed(path, "\t", ["user", "item", "rating", "timestamp"], 2, "tab")


def _layout_ml1m(path, **_):
    return _fixed(path, "::", ["user", "item", "rating", "timestamp"], 2, "'::'")


def _layout_msd(path, **_):
    layout = _fixed(path, "\t", ["user", "song", "play_count"], 2, "tab")
    layout.id_str = {0, 1}  # SHA-1 / song ids: skip the failed attempts at parsing numbers
    return layout


def _header_layout(
    path: Path, sep: str, sep_word: str, quoted: bool
) -> tuple[_Layout, list[str], int]:
    """Layout of a file whose first non-blank line is a header; also its fields and line number."""
    number, text = _first_lines(path, 1)[0]
    if quoted:
        fields = next(csv.reader([text], delimiter=sep))
    else:
        fields = text.split(sep)
    layout = _Layout(
        path, sep, [f.strip() for f in fields], 0, 1, None, skip=number, quoted=quoted
    )
    layout.what = f"{len(fields)} {sep_word}-separated fields, as in the header on line {number}"
    return layout, layout.names, number


def _find(path: Path, number: int, names: list[str], wanted: str, role: str) -> int:
    hits = [i for i, name in enumerate(names) if name == wanted]
    if not hits:
        raise RactError(
            f"{path}: line {number}: no {role} column {wanted!r} in the header "
            f"(columns found: {', '.join(names)})"
        )
    if len(hits) > 1:
        raise RactError(
            f"{path}: line {number}: column {wanted!r} appears {len(hits)} times in the header"
        )
    return hits[0]


def _layout_mlcsv(path, **_):
    layout, names, number = _header_layout(path, ",", "comma", quoted=False)
    layout.user = _find(path, number, names, "userId", "user")
    layout.item = _find(path, number, names, "movieId", "item")
    layout.rating = _find(path, number, names, "rating", "rating")
    return layout


def _layout_recbole(path, columns=None, **_):
    layout, fields, number = _header_layout(path, "\t", "tab", quoted=False)
    names = [f.split(":", 1)[0].strip() for f in fields]
    layout.names = names
    columns = columns or {}

    def locate(role: str, default: str | None) -> int | None:
        wanted = columns.get(role, default)
        if wanted is None:
            return None
        if _is_number(wanted):
            return _field_number(path, role, wanted, len(names), "the header has")
        if wanted not in names:
            raise RactError(
                f"{path}: line {number}: RecBole header has no {wanted!r} field for the {role} "
                f"(fields found: {', '.join(fields)})"
            )
        return _find(path, number, names, wanted, role)

    layout.user, layout.item = locate("user", "user_id"), locate("item", "item_id")
    layout.rating = locate("rating", "rating" if "rating" in names else None)
    return layout


def _is_number(key) -> bool:
    """Whether a column is given by its field number rather than its name."""
    return isinstance(key, (int, np.integer)) and not isinstance(key, bool)


def _field_number(path, role: str, number, n_fields: int, fields_of: str) -> int:
    """Field `number` for `role`, if the lines have that many fields."""
    if not 0 <= number < n_fields:
        raise RactError(
            f"{path}: {role} column {number} is out of range: {fields_of} {n_fields} fields "
            f"(numbered from 0)"
        )
    return int(number)


def _csv_separator(sep: str | None) -> tuple[str, str]:
    """The separator of a generic csv file (',' by default; '\\t' or 'tab' for a tab) and
    its name in messages."""
    sep = "," if sep is None else sep
    sep = {"\\t": "\t", "tab": "\t", "TAB": "\t"}.get(sep, sep)
    if len(sep) != 1 or sep in '"\r\n':
        raise RactError(f"sep must be a single character such as ',' or '\\t', got {sep!r}")
    words = {",": "comma", "\t": "tab", ";": "semicolon", " ": "space"}
    return sep, words.get(sep, repr(sep))


def _headerless_layout(path, sep: str, sep_word: str) -> _Layout:
    """The layout of a csv file without a header, as wide as its first data line."""
    number, text = _first_lines(path, 1)[0]
    width = len(next(csv.reader([text], delimiter=sep)))
    layout = _Layout(path, sep, [""] * width, 0, 1, None, skip=number - 1, quoted=True)
    layout.what = f"{width} {sep_word}-separated fields, as on line {number}"
    return layout


def _layout_csv(path, columns=None, sep=None, header=None, **_):
    sep, sep_word = _csv_separator(sep)
    header = True if header is None else bool(header)

    if header:
        layout, names, number = _header_layout(path, sep, sep_word, quoted=True)
        if columns is None:
            columns = {"user": "user", "item": "item"}
            if "rating" in names:
                columns["rating"] = "rating"
        where = f"line {number}: "
    else:
        layout = _headerless_layout(path, sep, sep_word)
        names, number = layout.names, layout.skip + 1
        if columns is None:
            columns = {"user": 0, "item": 1, "rating": 2 if len(names) >= 3 else None}
        where = ""

    def locate(role: str) -> int:
        key = columns[role]
        if isinstance(key, str) and not header and key.strip().isdigit():
            key = int(key)
        if _is_number(key):
            return _field_number(path, role, key, len(names), "lines have")
        if not header:
            raise RactError(
                f"{path}: the file has no header, so columns[{role!r}] must be a field number "
                f"counted from 0, got {key!r}"
            )
        if key not in names:
            raise RactError(
                f"{path}: {where}no column {key!r} for the {role} "
                f"(columns found: {', '.join(names)}); set columns={{'user': ..., 'item': ...}}"
            )
        return _find(path, number, names, key, role)

    layout.user, layout.item = locate("user"), locate("item")
    layout.rating = locate("rating") if columns.get("rating") is not None else None
    if len({layout.user, layout.item, layout.rating} - {None}) < 2 + (layout.rating is not None):
        raise RactError(f"{path}: columns {columns!r} use the same column twice")
    return layout


_LAYOUTS = {
    "ml-100k": _layout_ml100k,
    "ml-1m": _layout_ml1m,
    "ml-csv": _layout_mlcsv,
    "recbole": _layout_recbole,
    "msd": _layout_msd,
    "csv": _layout_csv,
}


# ---------------------------------------------------------------------------------------------
# Delimited files: fast parse, slow diagnosis


def _read_delimited(layout: _Layout, double_colon: bool) -> pd.DataFrame:
    first = next(_rows(layout), None)
    if first is None:
        raise RactError(f"{layout.path}: no interactions found (only a header or blank lines)")
    number, fields = first
    if len(fields) != layout.n:  # pandas would silently drop extra fields on the first line
        raise RactError(
            f"{layout.path}: line {number}: expected {layout.what}, found {len(fields)}"
        )

    id_str = set(layout.id_str)
    while True:
        try:
            frame, retry = _parse(layout, double_colon, id_str)
        except _Invalid:
            raise _explain(layout) from None
        if not retry - id_str:
            return frame
        id_str |= retry  # ids that are not all integers: read them again as text


def _parse(layout: _Layout, double_colon: bool, id_str: set[int]) -> tuple[pd.DataFrame, set[int]]:
    """Fast C-engine parse; raises _Invalid on any doubt; also returns ids to re-read as str."""
    # '::' is two ':' separators with an empty field between; the C engine needs one character.
    step = 2 if double_colon else 1
    width = (layout.n - 1) * step + 1
    names = [f"f{i}" for i in range(width)]
    col = lambda logical: names[logical * step]  # noqa: E731
    gaps = [names[i] for i in range(1, width, 2)] if double_colon else []
    dtype = {gap: "float64" for gap in gaps}
    if layout.rating is not None:
        dtype[col(layout.rating)] = "float64"
    for logical in id_str:
        dtype[col(logical)] = "str"
    sep = ":" if double_colon else layout.sep
    raw = _read_fields(layout, sep, names, dtype)
    user, item = raw[col(layout.user)], raw[col(layout.item)]
    if user.isna().any() or item.isna().any():
        raise _Invalid
    if any(raw[gap].notna().any() for gap in gaps):
        raise _Invalid
    if layout.rating is not None:
        rating = raw[col(layout.rating)].to_numpy(dtype="float64")
        if not np.isfinite(rating).all():
            raise _Invalid
    else:
        rating = np.full(len(raw), np.nan)
    # A short line leaves its last fields NaN, but so does an empty last field; counting the
    # separators tells the two apart without the slow scan in the usual case.
    if raw[names[-1]].isna().any() and not _all_full_width(layout, sep, width, len(raw)):
        if _diagnose(layout) is not None:
            raise _Invalid

    retry = {
        logical
        for logical, series in ((layout.user, user), (layout.item, item))
        if not (series.dtype == np.int64 or isinstance(series.dtype, pd.StringDtype))
    }
    return pd.DataFrame({"user": user, "item": item, "rating": rating}), retry


def _read_fields(layout: _Layout, sep: str, names: list[str], dtype: dict) -> pd.DataFrame:
    """The data lines' physical fields, read by pandas' C engine; raises _Invalid on any error
    or parser warning."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            warnings.simplefilter("error", pd.errors.ParserWarning)
            raw = pd.read_csv(
                layout.path,
                sep=sep,
                header=None,
                names=names,
                dtype=dtype,
                skiprows=layout.skip,
                quoting=csv.QUOTE_MINIMAL if layout.quoted else csv.QUOTE_NONE,
                **_PANDAS,
            )
    except (ValueError, UnicodeDecodeError, OverflowError, pd.errors.ParserWarning):
        raise _Invalid from None  # ParserError and EmptyDataError are ValueErrors too
    if len(raw) == 0:
        raise RactError(f"{layout.path}: no interactions found (only a header or blank lines)")
    return raw


def _all_full_width(layout: _Layout, sep: str, width: int, rows: int) -> bool:
    """Whether the data lines hold exactly (width - 1) * rows separators."""
    needle = sep.encode("utf-8")
    total = 0
    with open(layout.path, "rb") as handle:
        for _ in range(layout.skip):
            handle.readline()
        while chunk := handle.read(1 << 24):
            total += chunk.count(needle)
    return total == (width - 1) * rows


def _split(layout: _Layout, text: str) -> list[str]:
    return text.split(layout.sep)


def _rows(layout: _Layout) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each data line, for the slow diagnostic pass."""
    with open(layout.path, "rb") as handle:
        lines = _decoded(handle, layout.path)
        if layout.quoted:
            reader = csv.reader(lines, delimiter=layout.sep)
            for fields in reader:
                if reader.line_num > layout.skip and not _blank(fields):
                    yield reader.line_num, fields
        else:
            for number, text in enumerate(lines, 1):
                if number > layout.skip and text.strip():
                    yield number, _split(layout, text)


def _blank(fields: list[str]) -> bool:
    return not fields or (len(fields) == 1 and not fields[0].strip())


def _diagnose(layout: _Layout) -> str | None:
    """The first problem in the file, as a message, or None."""
    for number, fields in _rows(layout):
        where = f"{layout.path}: line {number}: "
        if len(fields) != layout.n:
            return f"{where}expected {layout.what}, found {len(fields)}"
        for role, index in (("user", layout.user), ("item", layout.item)):
            if not fields[index].strip():
                return f"{where}{role} id is missing ({_field(layout, index)})"
        if layout.rating is not None:
            value = fields[layout.rating]
            if not value.strip():
                return f"{where}rating is missing ({_field(layout, layout.rating)})"
            if not _NUMBER.match(value):
                return f"{where}rating {value!r} is not a number ({_field(layout, layout.rating)})"
    return None


def _field(layout: _Layout, index: int) -> str:
    name = layout.names[index]
    return f"field {index + 1}" + (f", {name!r}" if name else "")


def _explain(layout: _Layout) -> RactError:
    message = _diagnose(layout)
    if message is None:  # the fast parser disliked something the scan accepts
        message = f"{layout.path}: could not be read as {layout.what}"
    return RactError(message)


# ---------------------------------------------------------------------------------------------
# Netflix Prize


def _netflix_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = []
    for folder in (path, path / "training_set"):
        if folder.is_dir():
            found = sorted(folder.glob("combined_data_*.txt")) + sorted(folder.glob("mv_*.txt"))
            files.extend(f for f in found if f.is_file())
    if not files:
        raise RactError(
            f"{path}: no Netflix files (mv_*.txt or combined_data_*.txt) in this folder "
            "or its training_set/ subfolder"
        )
    kinds = {f.name.split("_")[0] for f in files}
    if len(kinds) > 1:
        log.warning("%s holds both mv_*.txt and combined_data_*.txt files; reading all", path)
    return files


def _read_netflix(path: Path) -> pd.DataFrame:
    files = _netflix_files(path)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    batch: list[tuple[Path, bytes]] = []
    size = 0

    def flush():
        nonlocal size
        if batch:
            parts.append(_netflix_batch(batch))
            batch.clear()
            size = 0

    # Each mv_*.txt starts with its 'movie:' line, so the bytes of many files join into one
    # combined-style text; parsing ~64 MB at a time avoids 17,770 separate pandas calls.
    for file in files:
        data = file.read_bytes()
        if not data.strip():
            raise RactError(f"{file}: file is empty")
        _not_archive(file, data[:4])
        batch.append((file, data))
        size += len(data)
        if size >= _NETFLIX_BATCH_BYTES:
            flush()
    flush()
    movie, customer, rating = (np.concatenate(arrays) for arrays in zip(*parts))
    if len(movie) == 0:
        raise RactError(f"{path}: no ratings found (only movie id lines)")
    return pd.DataFrame({"user": customer, "item": movie, "rating": rating})


def _netflix_batch(batch: list[tuple[Path, bytes]]):
    chunks = []
    for _, data in batch:
        data = data.removeprefix(b"\xef\xbb\xbf")
        chunks.append(data if data.endswith(b"\n") else data + b"\n")
    try:
        return _netflix_parse(b"".join(chunks))
    except _Invalid:
        pass
    for file, data in batch:  # find the file at fault, then its line
        try:
            _netflix_parse(data.removeprefix(b"\xef\xbb\xbf"))
        except _Invalid:
            message = _netflix_diagnose(file)
            message = message or f"{file}: could not be read as a Netflix Prize ratings file"
            raise RactError(message) from None
    raise RactError(f"{batch[0][0]}: could not be read as a Netflix Prize ratings file")


def _netflix_parse(data: bytes):
    """(movie, customer, rating) arrays from combined-style text; raises _Invalid on any doubt."""
    # thousands=':' makes the C engine read a 'movie:' line as the integer movie; the colon
    # counts below then prove every ':' ended such a line.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            raw = pd.read_csv(
                io.BytesIO(data),
                sep=",",
                header=None,
                names=["id", "rating", "date"],
                dtype={"id": "int64", "rating": "float64", "date": "category"},
                thousands=":",
                quoting=csv.QUOTE_NONE,
                **_PANDAS,
            )
    except (ValueError, UnicodeDecodeError, OverflowError, pd.errors.ParserWarning):
        raise _Invalid from None
    ids = raw["id"].to_numpy()
    rating = raw["rating"].to_numpy()
    no_rating = np.isnan(rating)
    no_date = raw["date"].isna().to_numpy()
    is_movie = no_rating & no_date
    colons = data.count(b":")
    line_end_colons = data.count(b":\n") + data.count(b":\r") + data.endswith(b":")
    if (
        len(ids) == 0
        or not is_movie[0]
        or (no_rating != no_date).any()
        or not (colons == line_end_colons == int(is_movie.sum()))
        or any(":" in str(day) for day in raw["date"].cat.categories)
        or not np.isfinite(rating[~is_movie]).all()
    ):
        raise _Invalid
    starts = np.flatnonzero(is_movie)
    movie = np.repeat(ids[starts], np.diff(np.append(starts, len(ids))))
    keep = ~is_movie
    return movie[keep], ids[keep], rating[keep]


def _netflix_diagnose(file: Path) -> str | None:
    movie_seen = False
    with open(file, "rb") as handle:
        for number, text in enumerate(_decoded(handle, file), 1):
            if not text.strip():
                continue
            where = f"{file}: line {number}: "
            if text.endswith(":"):
                value = text[:-1]
                if not _INTEGER.match(value):
                    return f"{where}movie id {value!r} is not an integer"
                movie_seen = True
                continue
            if not movie_seen:
                return f"{where}expected a movie id line such as '1:' before the first rating"
            fields = text.split(",")
            if len(fields) != 3:
                return (
                    f"{where}expected a movie id line such as '1:' or 3 comma-separated fields "
                    f"(customer, rating, date), found {len(fields)}"
                )
            customer, rating, date = fields
            if not _INTEGER.match(customer):
                return f"{where}customer id {customer!r} is not an integer"
            if not rating.strip():
                return f"{where}rating (field 2) is missing"
            if not _NUMBER.match(rating):
                return f"{where}rating {rating!r} is not a number"
            if not date.strip():
                return f"{where}date (field 3) is missing"
            if ":" in date:
                return f"{where}date {date!r} is not a date like 2005-09-06"
    return None
