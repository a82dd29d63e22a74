"""Each raw format on a tiny file in its exact layout, and the error messages for broken files."""

import math
import zipfile

import numpy as np
import pandas as pd
import pytest

from ract.data.readers import FORMAT_HELP, FORMATS, read_interactions
from ract.errors import RactError


def write(tmp_path, name, content):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def assert_frame(frame, users, items, ratings):
    assert list(frame.columns) == ["user", "item", "rating"]
    assert frame["user"].tolist() == users
    assert frame["item"].tolist() == items
    got = frame["rating"].tolist()
    assert len(got) == len(ratings)
    for a, b in zip(got, ratings):
        assert (math.isnan(a) and math.isnan(b)) if b != b else a == b
    assert frame["rating"].dtype == np.float64
    assert isinstance(frame.index, pd.RangeIndex)


def error(path, fmt, **kwargs):
    with pytest.raises(RactError) as info:
        read_interactions(path, fmt, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_formats_all_described():
    assert set(FORMATS) == set(FORMAT_HELP)
    assert all("\n" not in text for text in FORMAT_HELP.values())


# ---------------------------------------------------------------------------------------------
# ml-100k


U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"


def test_ml100k(tmp_path):
    frame = read_interactions(write(tmp_path, "u.data", U_DATA), "ml-100k")
    assert_frame(frame, [196, 186, 22], [242, 302, 377], [3.0, 3.0, 1.0])
    assert frame["user"].dtype == np.int64 and frame["item"].dtype == np.int64


def test_ml100k_crlf_bom_and_blank_lines(tmp_path):
    text = "\ufeff196\t242\t3\t881250949\r\n\r\n186\t302\t3\t891717742\r\n"
    frame = read_interactions(write(tmp_path, "u.data", text), "ml-100k")
    assert_frame(frame, [196, 186], [242, 302], [3.0, 3.0])


def test_ml100k_short_line(tmp_path):
    path = write(tmp_path, "u.data", "1\t2\t3\t4\n1\t2\t3\t4\n7\n1\t2\t3\t4\n")
    assert error(path, "ml-100k") == (
        f"{path}: line 3: expected 4 tab-separated fields (user, item, rating, timestamp), found 1"
    )


def test_ml100k_long_line(tmp_path):
    path = write(tmp_path, "u.data", "1\t2\t3\t4\n1\t2\t3\t4\t5\n")
    assert error(path, "ml-100k").startswith(f"{path}: line 2: expected 4 tab-separated fields")


def test_ml100k_long_first_line(tmp_path):
    path = write(tmp_path, "u.data", "1\t2\t3\t4\t5\n1\t2\t3\t4\n")
    assert error(path, "ml-100k").endswith("found 5")


def test_ml100k_empty_timestamp_is_fine(tmp_path):
    frame = read_interactions(write(tmp_path, "u.data", "1\t2\t3\t\n4\t5\t1\t9\n"), "ml-100k")
    assert_frame(frame, [1, 4], [2, 5], [3.0, 1.0])


def test_bad_rating_names_line(tmp_path):
    lines = ["1\t2\t3\t4\n"] * 6 + ["1\t2\tabc\t4\n"]
    path = write(tmp_path, "u.data", "".join(lines))
    assert (
        error(path, "ml-100k")
        == f"{path}: line 7: rating 'abc' is not a number (field 3, 'rating')"
    )


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "", "1_0"])
def test_nan_or_missing_rating_rejected(tmp_path, value):
    path = write(tmp_path, "u.data", f"1\t2\t3\t4\n1\t2\t{value}\t4\n")
    message = error(path, "ml-100k")
    assert message.startswith(f"{path}: line 2: rating ")


def test_missing_user(tmp_path):
    path = write(tmp_path, "u.data", "1\t2\t3\t4\n\t2\t3\t4\n")
    assert error(path, "ml-100k") == f"{path}: line 2: user id is missing (field 1, 'user')"


def test_missing_item(tmp_path):
    path = write(tmp_path, "u.data", "1\t2\t3\t4\n5\t\t3\t4\n")
    assert error(path, "ml-100k") == f"{path}: line 2: item id is missing (field 2, 'item')"


def test_non_utf8(tmp_path):
    path = write(tmp_path, "u.data", b"1\t2\t3\t4\n1\t\xff\t3\t4\n")
    message = error(path, "ml-100k")
    assert message.startswith(f"{path}: line 2: byte 0xff at column 3 is not valid UTF-8")


def test_empty_and_blank_files(tmp_path):
    path = write(tmp_path, "u.data", "")
    assert error(path, "ml-100k") == f"{path}: file is empty"
    path = write(tmp_path, "v.data", "\n  \n\n")
    assert error(path, "ml-100k") == f"{path}: file is empty"


def test_missing_file_folder_unknown_format(tmp_path):
    missing = tmp_path / "nope.data"
    assert error(missing, "ml-100k") == f"{missing}: file not found"
    assert "is a folder" in error(tmp_path, "ml-100k")
    message = error(write(tmp_path, "u.data", U_DATA), "parquet")
    assert (
        "unknown input format 'parquet'" in message
        and "ml-100k" in message
        and "netflix" in message
    )


def test_zip_passed_by_mistake(tmp_path):
    path = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ml-100k/u.data", U_DATA)
    assert "is a zip archive" in error(path, "ml-100k")


def test_options_rejected_for_fixed_formats(tmp_path):
    path = write(tmp_path, "u.data", U_DATA)
    assert "'sep'" in error(path, "ml-100k", sep=",")
    assert "'columns'" in error(path, "msd", columns={"user": 0, "item": 1})


# ---------------------------------------------------------------------------------------------
# ml-1m / ml-10m ratings.dat


def test_ml1m(tmp_path):
    text = "1::1193::5::978300760\n1::661::3::978302109\n2::1357::5::978298709\n"
    frame = read_interactions(write(tmp_path, "ratings.dat", text), "ml-1m")
    assert_frame(frame, [1, 1, 2], [1193, 661, 1357], [5.0, 3.0, 5.0])


def test_ml10m_half_stars(tmp_path):
    text = "1::122::5::838985046\n1::185::4.5::838983525\n"
    frame = read_interactions(write(tmp_path, "ratings.dat", text), "ml-1m")
    assert_frame(frame, [1, 1], [122, 185], [5.0, 4.5])


def test_ml1m_single_colon(tmp_path):
    path = write(tmp_path, "ratings.dat", "1::1193::5::978300760\n1:661::3::978302109\n")
    assert error(path, "ml-1m") == (
        f"{path}: line 2: expected 4 '::'-separated fields (user, item, rating, timestamp), "
        "found 3"
    )


def test_ml1m_tab_separated_by_mistake(tmp_path):
    path = write(tmp_path, "ratings.dat", U_DATA)
    assert error(path, "ml-1m").startswith(f"{path}: line 1: expected 4 '::'-separated fields")


def test_ml1m_bad_rating(tmp_path):
    path = write(tmp_path, "ratings.dat", "1::1193::5::978300760\n1::661::x::978302109\n")
    assert (
        error(path, "ml-1m") == f"{path}: line 2: rating 'x' is not a number (field 3, 'rating')"
    )


# ---------------------------------------------------------------------------------------------
# ml-csv ratings.csv


def test_ml_csv(tmp_path):
    text = (
        "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,3.5,1112484676\n"
        "2,32,4.0,1112484819\n"
    )
    frame = read_interactions(write(tmp_path, "ratings.csv", text), "ml-csv")
    assert_frame(frame, [1, 1, 2], [2, 29, 32], [3.5, 3.5, 4.0])


def test_ml_csv_line_numbers_count_header(tmp_path):
    path = write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,1\n1,29,?,2\n")
    assert (
        error(path, "ml-csv") == f"{path}: line 3: rating '?' is not a number (field 3, 'rating')"
    )


def test_ml_csv_wrong_header(tmp_path):
    path = write(tmp_path, "ratings.csv", "user,movieId,rating,timestamp\n1,2,3.5,1\n")
    assert error(path, "ml-csv") == (
        f"{path}: line 1: no user column 'userId' in the header "
        "(columns found: user, movieId, rating, timestamp)"
    )


def test_ml_csv_header_only(tmp_path):
    path = write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\n")
    assert "no interactions found" in error(path, "ml-csv")


# ---------------------------------------------------------------------------------------------
# RecBole atomic .inter


INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"
)


def test_recbole(tmp_path):
    frame = read_interactions(write(tmp_path, "ml-100k.inter", INTER), "recbole")
    assert_frame(frame, [196, 186, 22], [242, 302, 377], [3.0, 3.0, 1.0])


def test_recbole_ids_with_and_without_trailing_zero_are_one_id(tmp_path, caplog):
    text = INTER + "196.0\t302\t4\t881250950\n186.0\t242.0\t5\t881250951\n22\t302.0\t2\t1\n"
    with caplog.at_level("INFO", logger="ract.data.readers"):
        frame = read_interactions(write(tmp_path, "ml-100k.inter", text), "recbole")
    assert_frame(
        frame,
        [196, 186, 22, 196, 186, 22],
        [242, 302, 377, 302, 242, 302],
        [3.0, 3.0, 1.0, 4.0, 5.0, 2.0],
    )
    assert frame["user"].dtype == np.int64 and frame["item"].dtype == np.int64
    assert [r.getMessage() for r in caplog.records if "unified" in r.getMessage()] == [
        f"{tmp_path / 'ml-100k.inter'}: unified 2 user ids and 2 item ids written both as "
        "integers and with a trailing .0 (196 and 196.0 read as one id)"
    ]


def test_trailing_zero_ids_among_text_ids(tmp_path):
    text = "user,item\nx,1\n7.0,1.0\n7,3\n8.0,4\n"
    frame = read_interactions(write(tmp_path, "a.csv", text), "csv")
    assert frame["user"].tolist() == ["x", "7", "7", "8.0"]  # 8.0 has no twin: left as written
    assert frame["item"].tolist() == [1, 1, 3, 4]


def test_recbole_other_order_no_rating_token_ids(tmp_path):
    text = "item_id:token\ttimestamp:float\tuser_id:token\nA12\t1\tu1\nB7\t2\tu2\n"
    frame = read_interactions(write(tmp_path, "x.inter", text), "recbole")
    assert_frame(frame, ["u1", "u2"], ["A12", "B7"], [float("nan")] * 2)
    assert isinstance(frame["user"].dtype, pd.StringDtype)


def test_recbole_columns_override(tmp_path):
    text = "uid:token\tiid:token\tscore:float\n1\t2\t0.5\n"
    frame = read_interactions(
        write(tmp_path, "x.inter", text),
        "recbole",
        columns={"user": "uid", "item": "iid", "rating": "score"},
    )
    assert_frame(frame, [1], [2], [0.5])


def test_recbole_columns_as_positions(tmp_path):
    frame = read_interactions(
        write(tmp_path, "x.inter", INTER), "recbole", columns={"user": 1, "item": 0}
    )
    assert_frame(frame, [242, 302, 377], [196, 186, 22], [3.0, 3.0, 1.0])


def test_recbole_header_without_user_id(tmp_path):
    path = write(tmp_path, "x.inter", "uid:token\titem_id:token\n1\t2\n")
    assert error(path, "recbole") == (
        f"{path}: line 1: RecBole header has no 'user_id' field for the user "
        "(fields found: uid:token, item_id:token)"
    )


def test_recbole_bad_line(tmp_path):
    path = write(tmp_path, "x.inter", INTER + "5\t6\n")
    assert error(path, "recbole") == (
        f"{path}: line 5: expected 4 tab-separated fields, as in the header on line 1, found 2"
    )


# ---------------------------------------------------------------------------------------------
# Netflix Prize


MV1 = "1:\n1488844,3,2005-09-06\n822109,5,2005-05-13\n"
MV2 = "2:\n2059652,4,2005-09-05\n"


def test_netflix_mv_file(tmp_path):
    frame = read_interactions(write(tmp_path, "mv_0000001.txt", MV1), "netflix")
    assert_frame(frame, [1488844, 822109], [1, 1], [3.0, 5.0])
    assert frame["user"].dtype == np.int64 and frame["item"].dtype == np.int64


def test_netflix_combined_file(tmp_path):
    text = "1:\n1488844,3,2005-09-06\n822109,5,2005-05-13\n2:\n2059652,4,2005-09-05\n3:\n"
    text += "10:\n1,1,2001-01-01\n"
    frame = read_interactions(write(tmp_path, "combined_data_1.txt", text), "netflix")
    assert_frame(frame, [1488844, 822109, 2059652, 1], [1, 1, 2, 10], [3.0, 5.0, 4.0, 1.0])


def test_netflix_folder(tmp_path):
    write(tmp_path, "nf/training_set/mv_0000002.txt", MV2)
    write(tmp_path, "nf/training_set/mv_0000001.txt", MV1.rstrip("\n"))  # no final newline
    write(tmp_path, "nf/probe.txt", "1:\n30878\n")
    frame = read_interactions(tmp_path / "nf", "netflix")
    assert_frame(frame, [1488844, 822109, 2059652], [1, 1, 2], [3.0, 5.0, 4.0])


def test_netflix_crlf_bom(tmp_path):
    text = "\ufeff1:\r\n1488844,3,2005-09-06\r\n2:\r\n5,1,2005-09-06\r\n"
    frame = read_interactions(write(tmp_path, "mv_0000001.txt", text), "netflix")
    assert_frame(frame, [1488844, 5], [1, 2], [3.0, 1.0])


def test_netflix_empty_folder(tmp_path):
    assert "no Netflix files" in error(tmp_path, "netflix")


def test_netflix_rating_before_movie(tmp_path):
    path = write(tmp_path, "mv_0000001.txt", "1488844,3,2005-09-06\n")
    assert error(path, "netflix") == (
        f"{path}: line 1: expected a movie id line such as '1:' before the first rating"
    )


@pytest.mark.parametrize(
    "line, expected",
    [
        (
            "822109,5",
            "expected a movie id line such as '1:' or 3 comma-separated fields "
            "(customer, rating, date), found 2",
        ),
        ("82x,5,2005-05-13", "customer id '82x' is not an integer"),
        ("822109,five,2005-05-13", "rating 'five' is not a number"),
        ("822109,,2005-05-13", "rating (field 2) is missing"),
        ("822109,5,", "date (field 3) is missing"),
        ("12:34,5,2005-05-13", "customer id '12:34' is not an integer"),
        (
            "1:2",
            "expected a movie id line such as '1:' or 3 comma-separated fields "
            "(customer, rating, date), found 1",
        ),
        ("x:", "movie id 'x' is not an integer"),
        ("822109,5,2005:05", "date '2005:05' is not a date like 2005-09-06"),
    ],
)
def test_netflix_bad_lines(tmp_path, line, expected):
    path = write(tmp_path, "combined_data_1.txt", MV1 + line + "\n" + MV2)
    assert error(path, "netflix") == f"{path}: line 4: {expected}"


def test_netflix_bad_file_in_folder_is_named(tmp_path):
    write(tmp_path, "training_set/mv_0000001.txt", MV1)
    bad = write(tmp_path, "training_set/mv_0000002.txt", "2:\n2059652,4\n")
    assert error(tmp_path, "netflix").startswith(f"{bad}: line 2: ")


# ---------------------------------------------------------------------------------------------
# MSD Taste Profile


def test_msd(tmp_path):
    text = (
        "b80344d063b5ccb3212f76538f3d9e43d87dca9e\tSOAKIMP12A8C130995\t1\n"
        "b80344d063b5ccb3212f76538f3d9e43d87dca9e\tSOAPDEY12A81C210A9\t12\n"
        "85c1f87fea955d09b4bec2e36aee110927aedf9a\tSOBBMDR12A8C13253B\t2\n"
    )
    frame = read_interactions(write(tmp_path, "train_triplets.txt", text), "msd")
    assert_frame(
        frame,
        ["b80344d063b5ccb3212f76538f3d9e43d87dca9e"] * 2
        + ["85c1f87fea955d09b4bec2e36aee110927aedf9a"],
        ["SOAKIMP12A8C130995", "SOAPDEY12A81C210A9", "SOBBMDR12A8C13253B"],
        [1.0, 12.0, 2.0],
    )
    assert isinstance(frame["user"].dtype, pd.StringDtype)


def test_msd_bad_count(tmp_path):
    path = write(tmp_path, "t.txt", "u1\tS1\t1\nu2\tS2\tmany\n")
    assert (
        error(path, "msd")
        == f"{path}: line 2: rating 'many' is not a number (field 3, 'play_count')"
    )


# ---------------------------------------------------------------------------------------------
# Generic CSV


def test_csv_default_columns(tmp_path):
    frame = read_interactions(write(tmp_path, "a.csv", "user,item,rating\na,x,1\nb,y,2\n"), "csv")
    assert_frame(frame, ["a", "b"], ["x", "y"], [1.0, 2.0])


def test_csv_named_columns_quoted(tmp_path):
    text = 'when,who,what,score\n2020,"u,1",i1,4\n2021,u2,"i""2",5\n'
    frame = read_interactions(
        write(tmp_path, "a.csv", text),
        "csv",
        columns={"user": "who", "item": "what", "rating": "score"},
    )
    assert_frame(frame, ["u,1", "u2"], ["i1", 'i"2'], [4.0, 5.0])


def test_csv_no_header_indices_tab(tmp_path):
    path = write(tmp_path, "a.tsv", "5\t10\t0.5\n6\t11\t1\n")
    for sep in ("\t", "\\t", "tab"):
        frame = read_interactions(
            path, "csv", sep=sep, header=False, columns={"user": 1, "item": "0"}
        )
        assert_frame(frame, [10, 11], [5, 6], [float("nan")] * 2)
    frame = read_interactions(path, "csv", sep="\t", header=False)
    assert_frame(frame, [5, 6], [10, 11], [0.5, 1.0])


def test_csv_implicit_two_columns(tmp_path):
    frame = read_interactions(write(tmp_path, "a.csv", "1,2\n3,4\n"), "csv", header=False)
    assert_frame(frame, [1, 3], [2, 4], [float("nan")] * 2)


def test_csv_mixed_and_huge_ids_become_str(tmp_path):
    text = "user,item\n1,99999999999999999999\nx,2\n"
    frame = read_interactions(write(tmp_path, "a.csv", text), "csv")
    assert frame["user"].tolist() == ["1", "x"]
    assert frame["item"].tolist() == ["99999999999999999999", "2"]


def test_csv_bool_and_float_ids_stay_text(tmp_path):
    frame = read_interactions(write(tmp_path, "a.csv", "user,item\nTrue,1.5\nFalse,2.0\n"), "csv")
    assert frame["user"].tolist() == ["True", "False"]
    assert frame["item"].tolist() == ["1.5", "2.0"]


def test_csv_column_not_found(tmp_path):
    path = write(tmp_path, "a.csv", "uid,iid\n1,2\n")
    assert error(path, "csv", columns={"user": "user_id", "item": "iid"}) == (
        f"{path}: line 1: no column 'user_id' for the user (columns found: uid, iid); "
        "set columns={'user': ..., 'item': ...}"
    )
    assert "no column 'user'" in error(path, "csv")


def test_csv_columns_lack_item(tmp_path):
    path = write(tmp_path, "a.csv", "uid,iid\n1,2\n")
    assert error(path, "csv", columns={"user": "uid"}) == (
        "columns: no 'item' column given; both 'user' and 'item' are required"
    )
    assert "unknown key 'time'" in error(
        path, "csv", columns={"user": "uid", "item": "iid", "time": "t"}
    )


def test_csv_index_out_of_range_and_names_without_header(tmp_path):
    path = write(tmp_path, "a.csv", "1,2\n3,4\n")
    assert "user column 5 is out of range" in error(
        path, "csv", header=False, columns={"user": 5, "item": 1}
    )
    assert "must be a field number" in error(
        path, "csv", header=False, columns={"user": "uid", "item": 1}
    )


def test_csv_bad_sep(tmp_path):
    path = write(tmp_path, "a.csv", "1,2\n")
    assert "sep must be a single character" in error(path, "csv", sep="::")


def test_csv_bad_rating_in_quoted_file(tmp_path):
    path = write(tmp_path, "a.csv", 'user,item,rating\n"a",b,1\n"c\nd",e,2\nf,g,bad\n')
    assert (
        error(path, "csv") == f"{path}: line 5: rating 'bad' is not a number (field 3, 'rating')"
    )


def test_csv_short_line(tmp_path):
    path = write(tmp_path, "a.csv", "user,item,rating,extra\na,b,1,x\nc,d\n")
    assert error(path, "csv") == (
        f"{path}: line 3: expected 4 comma-separated fields, as in the header on line 1, found 2"
    )


def test_csv_empty_trailing_column_is_fine(tmp_path):
    frame = read_interactions(
        write(tmp_path, "a.csv", "user,item,rating,\na,b,1,\nc,d,2,\n"), "csv"
    )
    assert_frame(frame, ["a", "c"], ["b", "d"], [1.0, 2.0])
