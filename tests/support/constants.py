"""Constants the tests share: made-up ID numbers, the test secrets, the frozen hour."""
TOKEN = "test-auth-token"
PIN_KEY = "test-pin-key"
# Made-up ID numbers with valid check characters (never a real person's).
ALICE = "370202198503120025"
BOB = "370203199005171015"
XENA = "37020219860714104X"
NOBODY = "370211197809300047"  # valid, but in no ledger unless a test adds it
PIN = "135790"
# Monday 30 November 2026, 10:00 in Qingdao: a working day.
MONDAY_10AM = "2026-11-30 02:00:00"
