"""Resident ID numbers (GB 11643-1999), masking and keyed PIN hashing: pure functions."""
from __future__ import annotations

import pytest

from models.identity import (
    birth_date,
    check_char,
    id_key,
    is_pin_shape,
    mask_id,
    mask_phone,
    normalise_id,
    pin_hash,
    pin_matches,
)

KEY = b"test-pin-key"
OTHER_KEY = b"another-pin-key"
# The example of the standard itself.
STANDARD_EXAMPLE = "11010519491231002X"


def test_the_standards_own_example_has_check_character_x():
    assert check_char(STANDARD_EXAMPLE[:17]) == "X"


@pytest.mark.parametrize(
    "first17, expected",
    [
        ("37020219850312002", "5"),  # S mod 11 = 8
        ("37020319900517101", "5"),
        ("81000019900101001", "9"),  # Hong Kong residence permit
        ("37020219000229101", "4"),
        ("37020220000229101", "0"),  # S mod 11 = 1 maps to 0
    ],
)
def test_check_character_follows_the_weights_and_the_mod_11_table(first17, expected):
    assert check_char(first17) == expected


# One example per remainder, checked with ISO 7064 MOD 11-2: check = (12 - S mod 11) mod 11, 10 = X.
@pytest.mark.parametrize(
    "first17, expected",
    [
        ("37020219850312100", "1"),
        ("37020219850312106", "0"),
        ("37020219850312101", "X"),
        ("37020219850312107", "9"),
        ("37020219850312102", "8"),
        ("37020219850312108", "7"),
        ("37020219850312103", "6"),
        ("37020219850312109", "5"),
        ("37020219850312104", "4"),
        ("37020219850312118", "3"),
        ("37020219850312105", "2"),
    ],
)
def test_every_check_character_of_the_table_is_reachable(first17, expected):
    assert check_char(first17) == expected
    assert normalise_id(first17 + expected) == first17 + expected


@pytest.mark.parametrize(
    "entered, canonical",
    [
        ("11010519491231002X", "11010519491231002X"),
        ("11010519491231002x", "11010519491231002X"),  # lowercase x
        ("11010519491231002*", "11010519491231002X"),  # the keypad's star as X
        (" 11010519491231002X\n", "11010519491231002X"),  # surrounding blanks
        ("370202198503120025", "370202198503120025"),  # Qingdao, Shinan district
        ("370202198802291019", "370202198802291019"),  # 29 February of a leap year
        ("370202200002291010", "370202200002291010"),  # 2000 was a leap year
        ("810000199001010019", "810000199001010019"),  # Hong Kong residence permit
        ("931840199001010011", "931840199001010011"),  # 2023 foreigners' permanent-residence ID
    ],
)
def test_valid_id_numbers_come_back_in_canonical_form(entered, canonical):
    assert normalise_id(entered) == canonical


@pytest.mark.parametrize(
    "entered",
    [
        pytest.param("", id="empty"),
        pytest.param("11010519491231002", id="17 characters"),
        pytest.param("11010519491231002X0", id="19 characters"),
        pytest.param("11010519491231002X#", id="keypad end key left in"),
        pytest.param("11010519491231*02X", id="star inside the number"),
        pytest.param("*10105194912310020", id="star in the first place"),
        pytest.param("37020219850312002*", id="star where the check is a digit"),
        pytest.param("37020219850312002X", id="X where the check is a digit"),
        pytest.param("11010519491231002Y", id="letter other than X last"),
        pytest.param("A1010519491231002X", id="letter first"),
        pytest.param("G12345678", id="passport number"),
        pytest.param("370202199002301017", id="30 February, right check character"),
        pytest.param("370202199013011015", id="month 13, right check character"),
        pytest.param("370202199001001012", id="day 00, right check character"),
        pytest.param("370202190002291014", id="29 February 1900, right check character"),
        pytest.param("110105194912310021", id="wrong check digit instead of X"),
        pytest.param("370202198503120026", id="wrong check digit"),
        pytest.param("810000199001010018", id="HK permit, wrong check digit"),
        pytest.param("931840199001010012", id="foreigner ID, wrong check digit"),
        pytest.param("3702021985 3120025", id="blank inside"),
    ],
)
def test_invalid_id_numbers_are_refused(entered):
    assert normalise_id(entered) is None


def test_star_stands_for_x_only_in_the_last_place():
    assert normalise_id(STANDARD_EXAMPLE[:17] + "*") == STANDARD_EXAMPLE
    assert normalise_id("*" + STANDARD_EXAMPLE[1:]) is None
    # Even where the star would make the arithmetic work, it is not a digit.
    assert normalise_id(STANDARD_EXAMPLE[:-2] + "*X") is None


def test_an_id_with_a_superscript_digit_is_refused_not_a_crash():
    assert normalise_id("²" + STANDARD_EXAMPLE[1:]) is None


def test_full_width_digits_are_not_an_id_number():
    # Keypads send ASCII; speech turns full-width digits into ASCII before they get here.
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in STANDARD_EXAMPLE[:17]) + "X"
    assert normalise_id(full_width) is None


def test_birth_date_is_read_from_places_7_to_14():
    from datetime import date

    assert birth_date(STANDARD_EXAMPLE) == date(1949, 12, 31)


@pytest.mark.parametrize(
    "id_number, masked",
    [
        ("11010519491231002X", "**************002X"),
        ("370202198503120025", "**************0025"),
    ],
)
def test_mask_id_keeps_only_the_last_four_characters(id_number, masked):
    assert mask_id(id_number) == masked
    assert id_number[6:14] not in mask_id(id_number)  # the birth date is hidden


@pytest.mark.parametrize(
    "number, masked",
    [
        ("+8613812345678", "+86138****5678"),
        ("13812345678", "138****5678"),
        ("1234567", "*******"),
        ("", ""),
        (None, ""),
    ],
)
def test_mask_phone_keeps_the_prefix_and_the_last_four_digits(number, masked):
    assert mask_phone(number) == masked


def test_pin_hash_is_neither_the_pin_nor_a_plain_digest():
    import hashlib

    h = pin_hash(KEY, STANDARD_EXAMPLE, "135790")
    assert "135790" not in h
    assert len(h) == 64 and set(h) <= set("0123456789abcdef")
    assert h not in {hashlib.sha256(s.encode()).hexdigest() for s in ("135790", STANDARD_EXAMPLE + "135790")}


def test_pin_hash_is_hmac_sha256_of_purpose_id_and_pin_so_stored_hashes_stay_valid():
    # A known answer: HMAC-SHA256 under the key of "pin", the ID number and the PIN joined by \x1f.
    # Any change to the scheme would lock every holder out of the PINs already in the ledger.
    assert pin_hash(KEY, STANDARD_EXAMPLE, "135790") == (
        "afaec3385f14da2b66a3deef1347be86690dd3f465ce22bbc2b50ddedd64b80d")


def test_pin_hash_depends_on_the_key():
    assert pin_hash(KEY, STANDARD_EXAMPLE, "135790") != pin_hash(OTHER_KEY, STANDARD_EXAMPLE, "135790")


def test_the_same_pin_of_two_holders_hashes_differently():
    assert pin_hash(KEY, STANDARD_EXAMPLE, "123456") != pin_hash(KEY, "370202198503120025", "123456")


def test_pin_hash_and_id_key_of_the_same_text_never_coincide():
    assert id_key(KEY, STANDARD_EXAMPLE) != pin_hash(KEY, STANDARD_EXAMPLE, "")


def test_pin_matches_the_right_pin_only():
    stored = pin_hash(KEY, STANDARD_EXAMPLE, "135790")
    assert pin_matches(KEY, STANDARD_EXAMPLE, "135790", stored) is True
    assert pin_matches(KEY, STANDARD_EXAMPLE, "135791", stored) is False
    assert pin_matches(OTHER_KEY, STANDARD_EXAMPLE, "135790", stored) is False
    assert pin_matches(KEY, "370202198503120025", "135790", stored) is False


@pytest.mark.parametrize("stored", [None, ""])
def test_pin_matches_is_false_when_no_hash_is_stored(stored):
    assert pin_matches(KEY, STANDARD_EXAMPLE, "135790", stored) is False
    assert pin_matches(KEY, "", "", stored) is False


@pytest.mark.parametrize("text", ["123456", "000000", "135790"])
def test_six_keypad_digits_are_a_pin(text):
    assert is_pin_shape(text) is True


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("12345", id="5 digits"),
        pytest.param("1234567", id="7 digits"),
        pytest.param("", id="empty"),
        pytest.param("12345*", id="star"),
        pytest.param("12345#", id="hash"),
        pytest.param("12 456", id="blank"),
        pytest.param("abcdef", id="letters"),
    ],
)
def test_anything_but_six_keypad_digits_is_not_a_pin(text):
    assert is_pin_shape(text) is False


def test_a_full_width_pin_is_not_a_keypad_pin():
    assert is_pin_shape("１３５７９０") is False


def id_born(yyyymmdd: str, place: str = "370202", seq: str = "002") -> str:
    """Return an ID number born on that day with the right check character."""
    first17 = place + yyyymmdd + seq
    return first17 + check_char(first17)


@pytest.mark.parametrize(
    "born",
    [
        pytest.param("00010101", id="year 0001"),
        pytest.param("25400101", id="year 2540"),
        pytest.param("99991231", id="year 9999"),
        pytest.param("18991231", id="the day before 1900"),
        pytest.param("20261201", id="the day after today"),
    ],
)
def test_a_birth_date_before_1900_or_after_today_is_no_id_number(born):
    from datetime import date

    assert normalise_id(id_born(born), today=date(2026, 11, 30)) is None


@pytest.mark.parametrize("born", ["19000101", "19491231", "20261130"], ids=["1900-01-01", "1949", "today"])
def test_a_birth_date_from_1900_to_today_is_accepted(born):
    from datetime import date

    assert normalise_id(id_born(born), today=date(2026, 11, 30)) == id_born(born)


def test_without_a_day_given_today_is_qingdaos_from_the_one_clock(clock):
    clock.move_to("2026-11-30 15:59:59")  # 23:59:59 in Qingdao
    assert normalise_id(id_born("20261201")) is None
    clock.move_to("2026-11-30 16:00:00")  # midnight in Qingdao: 1 December
    assert normalise_id(id_born("20261201")) == id_born("20261201")


@pytest.mark.parametrize("born", ["00010101", "25400101", "99991231"])
def test_the_import_refuses_a_line_whose_birth_date_cannot_be(runner, app, tmp_path, born):
    header = "id_number,name,card_number,status,pin,mobile,bank,applied_on"
    good = "370202198503120025,张伟,QD1000000001,normal,918273,,,"
    path = tmp_path / "holders.csv"
    path.write_text("\n".join([header, good, f"{id_born(born)},李娜,QD2000000001,normal,246802,,,"]) + "\n",
                    encoding="utf-8")
    result = runner.invoke(args=["ledger", "import", str(path)])
    assert result.exit_code != 0
    assert "line 3: id_number is not a valid 18-character ID number" in result.output
    assert "nothing imported" in result.output
    assert runner.invoke(args=["ledger", "show", "370202198503120025"]).exit_code != 0
