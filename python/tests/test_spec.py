import unittest

from attnlab_torch.spec import parse, parse_stack, qk_width


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
        self.assertEqual(qk_width(lin, 8), 4)
        self.assertEqual(qk_width(parse("linear:elu1"), 8), 8)
        self.assertEqual(parse("decay:gla")["norm"], "none")
        self.assertEqual(parse("delta:gated:neg_eigval=on").options, {"neg_eigval": "true"})
        self.assertEqual(parse("delta").variant, None)
        self.assertEqual(parse("softmax:forget=on"), parse("softmax:forget=true"))

    def test_bad_specs_name_the_problem(self):
        cases = [
            ("attention", "unknown family 'attention'"),
            ("softmax:sqrt", "sqrt_d"),
            ("softmax:fast", "unknown scaling 'fast'"),
            ("softmax:floor_scale=4", "belong to softmax:log_n_temp"),
            ("softmax:log_n_temp:floor_scale=0", "floor_scale must be"),
            ("softmax:softpick:sink=zero", "softpick has no softmax denominator"),
            ("softmax:sink=maybe", "sink"),
            ("softmax:gate=input", "gate"),
            ("softmax:ssmax:bias=1", "unknown option `bias`"),
            ("softmax:forget=maybe", "'forget' is true or false"),
            ("linear:gelu", "elu1"),
            ("linear:elu1:chunk=0", "chunk"),
            ("linear:elu1:chunk=x", "needs a number"),
            ("linear:elu1:chunk=-1", "needs a number"),
            ("linear:elu1:colour=red", "colour"),
            ("linear:elu1:feature_dim=8", "belongs to linear:taylor"),
            ("linear:taylor:features=8", "belongs to linear:performer"),
            ("linear:taylor:feature_dim=0", "feature_dim must be at least 1"),
            ("linear", "feature map"),
            ("linear:elu1:norm", "expected key=value"),
            ("linear:elu1:chunk=2:chunk=3", "given twice"),
            ("sigmoid:bias=x", "needs a number"),
            ("stickbreak:scale=2", "unknown option"),
            ("decay", "gate"),
            ("decay:retnet:conv=1", "not a short convolution"),
            ("decay:retnet:map=gelu", "map"),
            ("delta:fast", "unknown delta variant"),
            ("softmax::none", "empty"),
            ("", "empty"),
        ]
        for spec, needle in cases:
            with self.assertRaises(ValueError, msg=spec) as e:
                parse(spec)
            self.assertIn(needle, str(e.exception), spec)

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
