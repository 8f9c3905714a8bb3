"""The NIST StRD linear regression problems, against their certified values.

Data and certified values from NIST's Statistical Reference Datasets
(https://www.itl.nist.gov/div898/strd/lls/lls.shtml; public domain), computed there in
500-digit arithmetic. Digits of agreement = -log10(max relative error over the parameters).
Reference points: statsmodels' QR gets ~8 digits on Filip; a normal-equations solver gets none.
"""

from __future__ import annotations

import numpy as np
import pytest

from linreg.estimators import IncrementalLinearRegression

FILIP = np.array(
    [
        line.split()
        for line in """
0.8116 -6.860120914
0.9072 -4.324130045
0.9052 -4.358625055
0.9039 -4.358426747
0.8053 -6.955852379
0.8377 -6.661145254
0.8667 -6.355462942
0.8809 -6.118102026
0.7975 -7.115148017
0.8162 -6.815308569
0.8515 -6.519993057
0.8766 -6.204119983
0.8885 -5.853871964
0.8859 -6.109523091
0.8959 -5.79832982
0.8913 -5.482672118
0.8959 -5.171791386
0.8971 -4.851705903
0.9021 -4.517126416
0.909 -4.143573228
0.9139 -3.709075441
0.9199 -3.499489089
0.8692 -6.300769497
0.8872 -5.953504836
0.89 -5.642065153
0.891 -5.031376979
0.8977 -4.680685696
0.9035 -4.329846955
0.9078 -3.928486195
0.7675 -8.56735134
0.7705 -8.363211311
0.7713 -8.107682739
0.7736 -7.823908741
0.7775 -7.522878745
0.7841 -7.218819279
0.7971 -6.920818754
0.8329 -6.628932138
0.8641 -6.323946875
0.8804 -5.991399828
0.7668 -8.781464495
0.7633 -8.663140179
0.7678 -8.473531488
0.7697 -8.247337057
0.77 -7.971428747
0.7749 -7.676129393
0.7796 -7.352812702
0.7897 -7.072065318
0.8131 -6.774174009
0.8498 -6.478861916
0.8741 -6.159517513
0.8061 -6.835647144
0.846 -6.53165267
0.8751 -6.224098421
0.8856 -5.910094889
0.8919 -5.598599459
0.8934 -5.290645224
0.894 -4.974284616
0.8957 -4.64454848
0.9047 -4.290560426
0.9129 -3.885055584
0.9209 -3.408378962
0.9219 -3.13200249
0.7739 -8.726767166
0.7681 -8.66695597
0.7665 -8.511026475
0.7703 -8.165388579
0.7702 -7.886056648
0.7761 -7.588043762
0.7809 -7.283412422
0.7961 -6.995678626
0.8253 -6.691862621
0.8602 -6.392544977
0.8809 -6.067374056
0.8301 -6.684029655
0.8664 -6.378719832
0.8834 -6.065855188
0.8898 -5.752272167
0.8964 -5.132414673
0.8963 -4.811352704
0.9074 -4.098269308
0.9119 -3.66174277
0.9228 -3.2644011
""".strip().splitlines()
    ],
    dtype=float,
)  # columns: y, x (82 rows)
FILIP_CERTIFIED = [
    -1467.48961422980, -2772.17959193342, -2316.37108160893, -1127.97394098372,
    -354.478233703349, -75.1242017393757, -10.8753180355343, -1.06221498588947,
    -0.670191154593408e-01, -0.246781078275479e-02, -0.402962525080404e-04,
]  # fmt: skip
PONTIUS_Y = [
    0.11019,
    0.21956,
    0.32949,
    0.43899,
    0.54803,
    0.65694,
    0.76562,
    0.87487,
    0.98292,
    1.09146,
    1.20001,
    1.30822,
    1.41599,
    1.52399,
    1.63194,
    1.73947,
    1.84646,
    1.95392,
    2.06128,
    2.16844,
    0.11052,
    0.22018,
    0.32939,
    0.43886,
    0.54798,
    0.65739,
    0.76596,
    0.87474,
    0.983,
    1.0915,
    1.20004,
    1.30818,
    1.41613,
    1.52408,
    1.63159,
    1.73965,
    1.84696,
    1.95445,
    2.06177,
    2.16829,
]
PONTIUS_X = [150_000.0 * k for k in range(1, 21)] * 2
PONTIUS_CERTIFIED = [0.673565789473684e-03, 0.732059160401003e-06, -0.316081871345029e-14]
WAMPLER_X = np.arange(21.0)
WAMPLER_Y = {
    "Wampler1": [
        1,
        6,
        63,
        364,
        1365,
        3906,
        9331,
        19608,
        37449,
        66430,
        111111,
        177156,
        271453,
        402234,
        579195,
        813616,
        1118481,
        1508598,
        2000719,
        2613660,
        3368421,
    ],
    "Wampler2": [
        1.0,
        1.11111,
        1.24992,
        1.42753,
        1.65984,
        1.96875,
        2.38336,
        2.94117,
        3.68928,
        4.68559,
        6.0,
        7.71561,
        9.92992,
        12.75603,
        16.32384,
        20.78125,
        26.29536,
        33.05367,
        41.26528,
        51.16209,
        63.0,
    ],
    "Wampler3": [
        760.0,
        -2042.0,
        2111.0,
        -1684.0,
        3888.0,
        1858.0,
        11379.0,
        17560.0,
        39287.0,
        64382.0,
        113159.0,
        175108.0,
        273291.0,
        400186.0,
        581243.0,
        811568.0,
        1121004.0,
        1506550.0,
        2002767.0,
        2611612.0,
        3369180.0,
    ],
}
WAMPLER_CERTIFIED = {
    "Wampler1": [1.0] * 6,
    "Wampler2": [1.0, 0.1, 0.01, 0.001, 1e-4, 1e-5],
    "Wampler3": [1.0] * 6,
}


def digits(estimate: np.ndarray, certified: np.ndarray) -> float:
    error = np.max(np.abs(estimate - certified) / np.abs(certified))
    return float("inf") if error == 0 else float(-np.log10(error))


def _powers(x: np.ndarray, degree: int) -> np.ndarray:
    return np.column_stack([x**k for k in range(1, degree + 1)])


def _fit(X, y, n_batches: int, **params) -> np.ndarray:
    model = IncrementalLinearRegression(**params)
    for rows in np.array_split(np.arange(len(y)), n_batches):
        model.partial_fit(X[rows], np.asarray(y)[rows])
    return np.append(model.intercept_, model.coef_)


CASES = {
    # name: (design, target, certified [b0, b1, ...], digits required)
    "Filip": (_powers(FILIP[:, 1], 10), FILIP[:, 0], FILIP_CERTIFIED, 7),
    "Pontius": (_powers(np.array(PONTIUS_X), 2), PONTIUS_Y, PONTIUS_CERTIFIED, 11),
    **{
        name: (_powers(WAMPLER_X, 5), WAMPLER_Y[name], WAMPLER_CERTIFIED[name], 9)
        for name in WAMPLER_Y
    },
}


@pytest.mark.parametrize("n_batches", [1, 3])
@pytest.mark.parametrize("name", CASES)
def test_certified_values(name, n_batches, figures):
    X, y, certified, required = CASES[name]
    found = digits(_fit(X, y, n_batches), np.asarray(certified))
    figures.append(
        f"NIST {name} ({n_batches} batch(es)): {found:.1f} digits of the certified values"
    )
    assert found >= required, f"{name}: {found:.1f} digits"


def test_filip_is_full_rank_not_refused():
    X, y, _, _ = CASES["Filip"]
    model = IncrementalLinearRegression().fit(X, y)
    assert model.rank_ == 10


@pytest.mark.parametrize(
    ("name", "x", "y", "certified"),
    [
        ("NoInt1", np.arange(60.0, 71.0), np.arange(130.0, 141.0), 2.07438016528926),
        ("NoInt2", np.array([4.0, 5.0, 6.0]), np.array([3.0, 4.0, 4.0]), 0.727272727272727),
    ],
)
def test_through_the_origin_certified_values(name, x, y, certified, figures):
    model = IncrementalLinearRegression(fit_intercept=False).fit(x[:, None], y)
    found = digits(model.coef_, np.array([certified]))
    figures.append(f"NIST {name} (no intercept): {found:.1f} digits of the certified value")
    assert model.intercept_ == 0.0 and found >= 13
