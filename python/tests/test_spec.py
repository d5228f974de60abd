import unittest

from attnlab_torch import registry
from attnlab_torch.spec import Spec, parse, parse_stack


class SpecTests(unittest.TestCase):
    def test_canonical_specs_round_trip(self):
        # crates/model/src/families/mod.rs canonical_specs_round_trip, plus the other families.
        for spec in [
            "softmax", "softmax:none", "softmax:num_keys", "softmax:sum_key_norms", "softmax:learned",
            "softmax:qk_norm", "softmax:ssmax", "softmax:log_n_temp", "softmax:softpick",
            "softmax:forget=true", "softmax:gate=output:sink=learned", "softmax:sink=zero",
            "softmax:log_n_temp:attn_scale=0.2:floor_scale=4", "softmax:num_keys:forget=true:sink=zero",
            "sigmoid", "sigmoid:bias=-4", "sigmoid:bias=0.25",
            "linear:identity", "linear:elu1", "linear:relu", "linear:cosformer", "linear:taylor",
            "linear:taylor:feature_dim=8", "linear:performer:features=32", "linear:elu1:norm=none",
            "linear:elu1:form=recurrent", "linear:elu1:chunk=16",
            "decay:retnet", "decay:gla:map=elu1", "decay:mamba2:conv=4:norm=sum", "decay:forget",
            "delta", "delta:gated", "delta:gated:conv=4:neg_eigval=true", "delta:chunk=3",
            "stickbreak",
        ]:
            self.assertEqual(str(parse(spec)), spec)

    def test_defaults_are_omitted_and_options_sorted(self):
        self.assertEqual(str(parse("softmax:sqrt_d")), "softmax")
        self.assertEqual(str(parse("softmax:sqrt_d:forget=false:gate=none:sink=none")), "softmax")
        self.assertEqual(str(parse("linear:elu1:form=chunked:chunk=64:norm=sum")), "linear:elu1")
        self.assertEqual(str(parse("softmax:log_n_temp:floor_scale=4:attn_scale=0.2")), "softmax:log_n_temp:attn_scale=0.2:floor_scale=4")
        self.assertEqual(str(parse("sigmoid:bias=-4.0")), "sigmoid:bias=-4")
        self.assertEqual(str(parse("sigmoid:bias=1e-7")), "sigmoid:bias=0.0000001")
        self.assertEqual(str(parse("delta:neg_eigval=on")), "delta:neg_eigval=true")
        self.assertEqual(str(parse(" softmax ")), "softmax")

    def test_values_are_typed_with_defaults_and_options_are_the_given_ones(self):
        s = parse("softmax:qk_norm:sink=zero")
        self.assertEqual((s.family, s.variant), ("softmax", "qk_norm"))
        self.assertEqual(s.options, {"sink": "zero"})
        self.assertIs(s["forget"], False)
        self.assertEqual(s["floor_scale"], 8.0)
        self.assertEqual(parse("softmax").variant, "sqrt_d")
        self.assertIsNone(parse("sigmoid")["bias"])
        self.assertEqual(parse("sigmoid:bias=-2.5")["bias"], -2.5)
        lin = parse("linear:taylor:feature_dim=4")
        self.assertEqual((lin.variant, lin["feature_dim"], lin["norm"], lin["chunk"]), ("taylor", 4, "sum", 64))
        self.assertIsNone(lin.qk_width)  # read off the weights (heads.qk_width) or a description
        self.assertEqual(lin.module, "Linear")
        self.assertEqual(lin.convention("denominator_eps"), 1e-6)
        self.assertEqual(parse("decay:gla")["norm"], "none")
        self.assertEqual(parse("delta:gated:neg_eigval=on").options, {"neg_eigval": "true"})
        self.assertEqual(parse("delta").variant, None)
        self.assertEqual(parse("softmax:forget=on"), parse("softmax:forget=true"))

    def test_word_options_take_the_values_the_registry_lists(self):
        with self.assertRaisesRegex(ValueError, r"'norm': unknown value `bogus`, expected one of: sum, none"):
            parse("linear:elu1:norm=bogus")
        with self.assertRaisesRegex(ValueError, r"'sink': unknown value `learnt`, expected one of: none, learned, zero"):
            parse("softmax:sink=learnt")
        self.assertEqual(parse("softmax:sink=zero").one_of("sink"), "zero")
        self.assertEqual(parse("decay:gla:form=recurrent").one_of("form"), "recurrent")

    def test_conventions_follow_the_options_they_depend_on(self):
        # The registry's convention_rules, derived by attnlab from the families themselves.
        self.assertEqual(parse("delta").convention("beta_range"), 1.0)
        self.assertEqual(parse("delta:neg_eigval=true").convention("beta_range"), 2.0)
        self.assertEqual(parse("delta:gated:neg_eigval=on").convention("beta_range"), 2.0)
        self.assertEqual(parse("delta:neg_eigval=true").convention("l2_eps"), parse("delta").convention("l2_eps"))

    def test_bad_specs_name_the_problem(self):
        # What the registry-driven grammar checks. The rules between options and on values'
        # ranges and choices (floor_scale belongs to log_n_temp, chunk >= 1, sink=maybe, ...)
        # are attnlab's, asserted by its own tests (crates/model/src/families/).
        cases = [
            ("attention", "unknown family 'attention'"),
            ("softmax:sqrt", "sqrt_d"),
            ("softmax:fast", "unknown variant 'fast' of softmax"),
            ("softmax:ssmax:bias=1", "unknown option `bias`"),
            ("softmax:forget=maybe", "'forget' is true or false"),
            ("linear:gelu", "elu1"),
            ("linear:elu1:chunk=x", "needs a number"),
            ("linear:elu1:chunk=-1", "needs a number"),
            ("linear:elu1:colour=red", "colour"),
            ("linear", "linear needs a variant: linear:<map>"),
            ("linear:elu1:norm", "expected key=value"),
            ("linear:elu1:chunk=2:chunk=3", "given twice"),
            ("sigmoid:bias=x", "needs a number"),
            ("sigmoid:fast", "expected key=value"),
            ("stickbreak:scale=2", "stickbreak takes no options"),
            ("decay", "decay needs a variant: decay:<retnet|mamba2|gla|forget>"),
            ("decay:retnet:gated", "expected key=value"),
            ("delta:fast", "unknown variant 'fast' of delta"),
            ("softmax::none", "empty"),
            ("", "empty"),
        ]
        for spec, needle in cases:
            with self.assertRaises(ValueError, msg=spec) as e:
                parse(spec)
            self.assertIn(needle, str(e.exception), spec)

    def test_a_description_is_taken_as_it_is(self):
        d = {
            "spec": "decay:gla:conv=4", "family": "decay", "module": "Decay", "variant": "gla",
            "options": dict(registry.defaults("decay"), conv=4), "qk_width": 32,
            "conventions": {"gla_logit_normalizer": {"value": 16.0, "doc": "..."}}, "parameters": {},
        }
        s = Spec.from_description(d)
        self.assertEqual(str(s), "decay:gla:conv=4")
        self.assertEqual((s.family, s.module, s.variant, s["conv"], s.qk_width), ("decay", "Decay", "gla", 4, 32))
        self.assertEqual(s.convention("gla_logit_normalizer"), 16.0)
        self.assertEqual(s.options, {"conv": "4"})
        self.assertEqual(s, parse("decay:gla:conv=4"))
        with self.assertRaises(KeyError):
            s.convention("l2_eps")

    def test_stacks(self):
        self.assertEqual([str(s) for s in parse_stack("softmax", 3)], ["softmax"] * 3)
        self.assertEqual([str(s) for s in parse_stack("softmax,linear:elu1", 2)], ["softmax", "linear:elu1"])
        self.assertEqual([str(s) for s in parse_stack(["sigmoid", "stickbreak"], 2)], ["sigmoid", "stickbreak"])
        with self.assertRaises(ValueError) as e:
            parse_stack(["softmax", "softmax", "softmax"], 2)
        self.assertIn("lists 3 specs", str(e.exception))
        with self.assertRaises(ValueError):
            parse_stack([], 2)


if __name__ == "__main__":
    unittest.main()
