"""The console's forms; Flask-WTF adds the CSRF token to each."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length


class LoginForm(FlaskForm):  # type: ignore[misc]  # Flask-WTF has no type information: FlaskForm is Any
    """Agent login."""

    username = StringField("用户名", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("密码", validators=[DataRequired(), Length(max=256)])


class LookupForm(FlaskForm):  # type: ignore[misc]  # Flask-WTF has no type information: FlaskForm is Any
    """Find a cardholder: ID number, name and the ID's last four, mobile or card number (models.search)."""

    q = StringField("查询持卡人")  # read as typed, cut to 64 characters (ivr.console.holders)


class MobileForm(FlaskForm):  # type: ignore[misc]  # Flask-WTF has no type information: FlaskForm is Any
    """Change a cardholder's contact mobile."""

    mobile = StringField("新手机号码", validators=[DataRequired(), Length(max=20)])


class ActionForm(FlaskForm):  # type: ignore[misc]  # Flask-WTF has no type information: FlaskForm is Any
    """A button that changes something: only the CSRF token."""
