"""A frozen copy of the two astropy.io.fits settings its header cards read.

``astropy.io.fits.card`` consults ``conf.strip_header_whitespace`` every time a card's value or comment
is read and ``conf.enable_record_valued_keyword_cards`` every time a card is parsed; each read of an
astropy ``ConfigItem`` goes through the configuration file object (~15 µs).  Opening and writing
products through stdatamodels reads cards tens of thousands of times: 35,000 reads, ~0.15-0.2 s of
CPU, in one tso3 job of the grism demo (three segments).  Nothing in webbflow, stdatamodels or jwst
changes either setting, so a job gives the card module a plain namespace holding the values in force
when it starts; the cards, and so the products, are the same.
"""

from types import SimpleNamespace

__all__ = ["freeze_card_config"]


def freeze_card_config():
    """Give ``astropy.io.fits.card`` the current values of the settings it reads as plain attributes.

    Idempotent.  A later ``astropy.io.fits.conf.set_temp`` of either setting would not reach the cards,
    so call this only in a job's process (or the job server's), which never changes them.
    """
    import astropy.io.fits.card as card
    from astropy.io import fits

    if isinstance(card.conf, SimpleNamespace):
        return
    card.conf = SimpleNamespace(strip_header_whitespace=bool(fits.conf.strip_header_whitespace),
                                enable_record_valued_keyword_cards=bool(fits.conf.enable_record_valued_keyword_cards))
