"""Approximate country centroids, for impossible-travel checks between country codes.

>>> round(distance_km("FR", "US"))
7483
>>> distance_km("FR", "XX") is None
True
"""

from __future__ import annotations

from math import asin, cos, radians, sin, sqrt

__all__ = ["CENTROIDS", "distance_km"]

# ISO 3166 alpha-2 -> (latitude, longitude) of a populous point; good to a few hundred km.
CENTROIDS: dict[str, tuple[float, float]] = {
    "AE": (24.4, 54.4), "AR": (-34.6, -58.4), "AT": (48.2, 16.4), "AU": (-33.9, 151.2),
    "BD": (23.8, 90.4), "BE": (50.8, 4.4), "BG": (42.7, 23.3), "BR": (-23.5, -46.6),
    "CA": (43.7, -79.4), "CH": (47.4, 8.5), "CL": (-33.4, -70.7), "CN": (31.2, 121.5),
    "CO": (4.7, -74.1), "CZ": (50.1, 14.4), "DE": (50.1, 8.7), "DK": (55.7, 12.6),
    "DZ": (36.8, 3.1), "EE": (59.4, 24.8), "EG": (30.0, 31.2), "ES": (40.4, -3.7),
    "FI": (60.2, 24.9), "FR": (48.9, 2.4), "GB": (51.5, -0.1), "GH": (5.6, -0.2),
    "GR": (38.0, 23.7), "HK": (22.3, 114.2), "HR": (45.8, 16.0), "HU": (47.5, 19.0),
    "ID": (-6.2, 106.8), "IE": (53.3, -6.3), "IL": (32.1, 34.8), "IN": (19.1, 72.9),
    "IR": (35.7, 51.4), "IS": (64.1, -21.9), "IT": (45.5, 9.2), "JP": (35.7, 139.7),
    "KE": (-1.3, 36.8), "KR": (37.6, 127.0), "KZ": (43.2, 76.9), "LT": (54.7, 25.3),
    "LU": (49.6, 6.1), "LV": (56.9, 24.1), "MA": (33.6, -7.6), "MX": (19.4, -99.1),
    "MY": (3.1, 101.7), "NG": (6.5, 3.4), "NL": (52.4, 4.9), "NO": (59.9, 10.8),
    "NZ": (-36.8, 174.8), "PE": (-12.0, -77.0), "PH": (14.6, 121.0), "PK": (24.9, 67.0),
    "PL": (52.2, 21.0), "PT": (38.7, -9.1), "QA": (25.3, 51.5), "RO": (44.4, 26.1),
    "RS": (44.8, 20.5), "RU": (55.8, 37.6), "SA": (24.7, 46.7), "SE": (59.3, 18.1),
    "SG": (1.3, 103.8), "SI": (46.1, 14.5), "SK": (48.1, 17.1), "TH": (13.8, 100.5),
    "TR": (41.0, 29.0), "TW": (25.0, 121.6), "UA": (50.5, 30.5), "US": (39.8, -98.6),
    "UY": (-34.9, -56.2), "VE": (10.5, -66.9), "VN": (10.8, 106.7), "ZA": (-26.2, 28.0),
}


def distance_km(a: str, b: str) -> float | None:
    """Great-circle distance between two countries' centroids (``None`` if either unknown)."""
    if a == b:
        return 0.0
    pa, pb = CENTROIDS.get(a), CENTROIDS.get(b)
    if pa is None or pb is None:
        return None
    lat1, lon1, lat2, lon2 = map(radians, (*pa, *pb))
    h = sin((lat2 - lat1) / 2) ** 2 + cos(lat1) * cos(lat2) * sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * asin(sqrt(h))
