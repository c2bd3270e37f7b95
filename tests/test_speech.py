"""Spoken numbers and menu words become the keys a keypad would send, or nothing."""
from __future__ import annotations

import pytest

from ivr.callflow.speech import choice_from_speech, digits_from_speech

ID = "370202198503120025"


@pytest.mark.parametrize(
    "heard, x_last, digits",
    [
        ("370202198503120025", True, ID),
        ("370202 19850312 0025", True, ID),
        ("3702 0219 8503 1200 25", True, ID),
        ("三七零二零二一九八五零三一二零零二五", True, ID),
        ("三七〇二〇二一九八五〇三一二〇〇二五", True, ID),
        ("三七洞二洞二幺九八五洞三幺二洞洞二五", True, ID),
        ("我的身份证号码是370202198503120025", True, ID),
        ("身份证号 三七零二零二 一九八五零三一二 零零二五", True, ID),
        ("370202，19850312，0025。", True, ID),
        ("37020219860714104X", True, "37020219860714104X"),
        ("37020219860714104x", True, "37020219860714104X"),
        ("三七零二零二一九八六零七一四一零四叉", True, "37020219860714104X"),
        ("370202198607141 04 艾克斯", True, "37020219860714104X"),
        ("370202198607141 04 爱克斯", True, "37020219860714104X"),
        ("最后一位是叉 37020219860714104", True, None),  # the X must come last
        ("３７０２０２１９８５０３１２００２５", True, ID),  # full-width digits
        ("幺三八 幺二三四 五六七八", False, "13812345678"),
        ("一三八一二三四五六七八", False, "13812345678"),
        ("138-1234-5678", False, "13812345678"),
        ("我的手机号是13812345678", False, "13812345678"),
        ("手机号码 139 1234 5678", False, "13912345678"),
        ("幺三九两两三三四四五五", False, "13922334455"),
        ("零五三二 八八八八 一二三四", False, "053288881234"),
        ("0532-88881234", False, "053288881234"),
        ("嗯 幺三八 呃 幺二三四 五六七八", False, "13812345678"),
        ("拐拐拐", False, "777"),
        ("勾勾勾", False, "999"),
        ("壹贰叁肆伍陆柒捌玖零", False, "1234567890"),
        ("37020219860714104X", False, None),  # no X where it is not allowed
        ("叉", True, None),  # only an X
        ("", False, None),
        ("   ", False, None),
        ("我不知道", False, None),
        ("一百三十八", False, None),  # numbers read as amounts, not digit by digit
        ("十三八", False, None),
        ("hello", False, None),
        ("一三八 转人工", False, None),
        ("一三八。。。", False, "138"),
        ("(0532) 8888 1234", False, "053288881234"),
        ("号码是：１３８１２３４５６７８！", False, "13812345678"),
    ],
)
def test_spoken_numbers_become_keypad_digits(heard, x_last, digits):
    assert digits_from_speech(heard, x_last=x_last) == digits


MAIN = {"1": ("挂失", "丢了", "丢失"), "2": ("解挂", "解除挂失", "找到了"), "3": ("查询", "状态", "进度")}


@pytest.mark.parametrize(
    "heard, key",
    [
        ("挂失", "1"),
        ("我的卡丢了", "1"),
        ("我要口头挂失", "1"),
        ("解除挂失", "2"),
        ("卡找到了要解挂", "2"),
        ("查询办卡进度", "3"),
        ("转人工", "0"),
        ("我要找人工客服", "0"),
        ("再说一遍", "9"),
        ("返回主菜单", "*"),
        ("一", "1"),
        ("按二", "2"),
        ("3", "3"),
        ("按3号键", "3"),
        ("幺", "1"),
        ("今天天气怎么样", None),
        ("", None),
        ("挂失还是查询", None),  # two options heard as strongly: ask again
    ],
)
def test_spoken_menu_choices_become_keys(heard, key):
    assert choice_from_speech(heard, MAIN) == key
