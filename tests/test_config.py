import pytest

import effitrain as et
from effitrain.config import Budget, Config, ConfigError, DataConfig, ModelConfig, OptimConfig, RunConfig


@pytest.mark.parametrize("make, words", [
    (lambda: Budget.parse("-5s"), "budget.amount"),
    (lambda: Budget.parse("0steps"), "budget.amount"),
    (lambda: Budget.parse("12 parsecs"), "budget unit"),
    (lambda: Budget.parse("soon"), "budget must look like"),
    (lambda: DataConfig(mask_prob=1.5), "data.mask_prob must be in (0, 1); got 1.5"),
    (lambda: DataConfig(mask_prob=0), "data.mask_prob"),
    (lambda: DataConfig(seq_len=-1), "data.seq_len"),
    (lambda: DataConfig(vocab_size=10), "data.vocab_size"),
    (lambda: DataConfig(corpus=""), "data.corpus"),
    (lambda: ModelConfig(hidden=256, heads=3), "model.hidden must be divisible by model.heads"),
    (lambda: ModelConfig(preset="huge"), "model.preset must be one of"),
    (lambda: ModelConfig(norm="middle"), "model.norm"),
    (lambda: ModelConfig(dropout=1.0), "model.dropout"),
    (lambda: OptimConfig(lr=0), "optim.lr"),
    (lambda: OptimConfig(schedule="zigzag"), "optim.schedule"),
    (lambda: OptimConfig(warmup=1.0), "optim.warmup"),
    (lambda: RunConfig(batch_size=0), "run.batch_size"),
    (lambda: RunConfig(precision="fp8"), "run.precision"),
    (lambda: RunConfig(seed=-1), "run.seed"),
    (lambda: Config(data=DataConfig(seq_len=1024)), "data.seq_len (1024) must be <= model.max_positions (512)"),
    (lambda: et.profile_config("laptop"), "profile must be one of"),
    (lambda: et.profile_config("smoke").replace(learning_rate=1), "unknown config field 'learning_rate'"),
    (lambda: Config.from_dict({"model": {"hiden": 3}}), "unknown config field model.hiden"),
    (lambda: Config.from_dict({"modle": {}}), "unknown config section 'modle'"),
])
def test_bad_values_are_refused_with_one_line_naming_the_field(make, words):
    with pytest.raises(ConfigError) as err:
        make()
    message = str(err.value)
    assert words in message
    assert "\n" not in message


def test_bad_profile_in_environment(monkeypatch):
    monkeypatch.setenv("EFFITRAIN_PROFILE", "fast")
    with pytest.raises(ConfigError, match="EFFITRAIN_PROFILE must be one of"):
        et.default_profile()


@pytest.mark.parametrize("text, amount, unit", [
    ("2000steps", 2000, "steps"), ("60s", 60, "seconds"), ("5min", 300, "seconds"), ("1h", 3600, "seconds"),
    ("1e12flops", 1e12, "flops"), ("2e6tokens", 2e6, "tokens"), (" 30 sec ", 30, "seconds"),
])
def test_budget_parse(text, amount, unit):
    b = Budget.parse(text)
    assert (b.amount, b.unit) == (amount, unit)
    assert Budget.parse(str(b)) == b


def test_presets_fill_sizes_and_explicit_values_win():
    assert ModelConfig(preset="base").hidden == 768
    m = ModelConfig(preset="tiny", layers=3)
    assert (m.hidden, m.layers) == (128, 3)
    cfg = et.profile_config("smoke").replace(preset="mini")
    assert cfg.model.hidden == 256 and cfg.model.layers == 4


def test_round_trip_through_dict():
    cfg = et.profile_config("cpu", lr=3e-4, budget="1e12flops", seed=3)
    again = Config.from_dict(cfg.to_dict())
    assert again == cfg
    assert again.budget.unit == "flops" and again.run.seed == 3


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("EFFITRAIN_PROFILE", "smoke")
    assert et.profile_config().profile == "smoke"


# -- seeds and non-finite numbers (issue 10) ---------------------------------------------------
def test_seed_is_bounded_to_what_the_generators_take():
    from effitrain.config import MAX_SEED
    assert RunConfig(seed=MAX_SEED).seed == MAX_SEED
    for seed in (MAX_SEED + 1, 2**32 + 1, 99999999999999999999999):
        with pytest.raises(ConfigError) as err:
            RunConfig(seed=seed)
        message = str(err.value)
        assert "run.seed" in message and str(MAX_SEED) in message and "\n" not in message


def _float_fields():
    import dataclasses
    out = []
    for section, klass in (("data", DataConfig), ("model", ModelConfig), ("optim", OptimConfig),
                           ("run", RunConfig), ("budget", Budget)):
        for f in dataclasses.fields(klass):
            if f.type in ("float", float):
                out.append((section, klass, f.name))
    return out


def test_every_float_field_is_found():
    names = {f"{s}.{n}" for s, _, n in _float_fields()}
    assert {"model.init_std", "optim.eps", "optim.lr", "data.mask_prob", "budget.amount"} <= names


@pytest.mark.parametrize("section, klass, name", _float_fields(), ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")], ids=["inf", "-inf", "nan"])
def test_non_finite_floats_are_refused_in_every_float_field(section, klass, name, bad):
    with pytest.raises(ConfigError) as err:
        klass(**{name: bad})
    message = str(err.value)
    assert f"{section}.{name}" in message and "finite" in message and "\n" not in message
    # the same through a saved config (JSON reads NaN and Infinity)
    d = et.profile_config("smoke").to_dict()
    if section == "budget":
        d["budget"] = {"amount": bad, "unit": "steps"}
    else:
        d[section][name] = bad
    with pytest.raises(ConfigError, match=f"{section}.{name}"):
        Config.from_dict(d)


@pytest.mark.parametrize("text", ["0.5steps", "12.5steps"])
def test_a_step_budget_is_a_whole_number_of_steps(text):
    with pytest.raises(ConfigError, match=r"a step budget must be a whole number of steps >= 1; got .*steps"):
        Budget.parse(text)
    assert Budget.parse("0.5s").amount == 0.5  # seconds (and tokens, FLOPs) may be fractional


@pytest.mark.parametrize("field", ["run.evals", "run.threads", "data.min_words", "data.max_train_examples"])
def test_booleans_are_not_integers(field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        et.profile_config("smoke", **{field: True})


@pytest.mark.parametrize("change", [{"vocab_size": 10 ** 12}, {"threads": 100_000}, {"batch_size": 10 ** 8},
                                    {"layers": 10 ** 6}, {"hidden": 100_000}, {"max_positions": 10 ** 12},
                                    {"evals": 10 ** 9}])
def test_huge_values_are_refused_before_anything_is_allocated(change):
    (key, value), = change.items()
    with pytest.raises(ConfigError, match=rf"\.{key} = {value} is past its upper bound"):
        et.profile_config("smoke").replace(**change)


def test_a_profile_is_a_name_and_the_budget_is_one_value():
    with pytest.raises(ConfigError, match="profile must be a name"):
        et.profile_config("smoke").replace(profile=123)
    with pytest.raises(ConfigError, match=r"'budget.amount': the budget is one value, e.g. budget='500steps'"):
        et.profile_config("smoke").replace(**{"budget.amount": 5})


def test_a_config_that_cannot_fit_the_device_is_refused_before_allocating(smoke_data):
    from effitrain.bench import bench_training_step
    from effitrain.train.step import memory_needed

    cfg, data = smoke_data
    wide = cfg.replace(hidden=65536, heads=1024, budget="2steps")
    with pytest.raises(ConfigError, match=r"this run needs about [\d,.]+ GiB, more than the [\d,.]+ GiB of cpu: .*"
                                          r"model\.hidden=65536"):
        et.train(wide.replace(device="cpu"), data=data, progress=False)
    long = cfg.replace(batch_size=65536, seq_len=4096, max_positions=4096, device="cpu")
    with pytest.raises(ConfigError, match=r"one micro-batch \(run\.batch_size=65536 × data\.seq_len=4096"):
        bench_training_step(long, steps=1)
    small = memory_needed(cfg)  # the profiles' own sizes are far inside: tens of MB
    assert 1e6 < small["total"] < 1e9 and small["parameters"] > 1e5
