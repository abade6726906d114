"""ISO codes a school is created with: countries (ISO 3166-1 alpha-2) and currencies (ISO 4217), and
time zones (IANA, from the host's tz database).

The code lists were taken from Debian's iso-codes 4.15.0 (iso_3166-1.json, iso_4217.json). Left out of
the currencies: codes that are no money a school bills in (precious metals, funds and accounting units,
the testing and "no currency" codes).
"""

import zoneinfo
from functools import lru_cache

_COUNTRIES = """
        AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE
        BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD
        CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM
        DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF
        GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU
        ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN
        KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME
        MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA
        NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM
        PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI
        SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK
        TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI
        VN VU WF WS YE YT ZA ZM ZW
"""
_CURRENCIES = """
        AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF
        BMD BND BOB BRL BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC
        CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL
        GHS GIP GMD GNF GTQ GYD HKD HNL HRK HTG HUF IDR ILS INR IQD IRR
        ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR
        LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR
        MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR
        RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP
        STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD
        UYU UZS VED VES VND VUV WST XAF XCD XOF XPF YER ZAR ZMW ZWL
"""
COUNTRIES = frozenset(_COUNTRIES.split())
CURRENCIES = frozenset(_CURRENCIES.split())


@lru_cache(maxsize=1)
def _zones() -> frozenset:
    # "localtime" is the host's own setting and "Factory" a placeholder, neither a place.
    return frozenset(zoneinfo.available_timezones()) - {"localtime", "Factory"}


def country_problem(code: str) -> str | None:
    return None if code in COUNTRIES else "is not an ISO 3166-1 alpha-2 country code (e.g. KE, GB, US)"


def currency_problem(code: str) -> str | None:
    return None if code in CURRENCIES else "is not an ISO 4217 currency code (e.g. KES, GBP, USD)"


def timezone_problem(name: str) -> str | None:
    if name in _zones():
        return None
    if not _zones():
        return "cannot be checked: this host has no IANA time zone database (install tzdata)"
    return "is not an IANA time zone name (e.g. Africa/Nairobi, Europe/London, UTC)"
