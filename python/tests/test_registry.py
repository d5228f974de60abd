import unittest

from attnlab_torch import registry
from attnlab_torch import spec as S
from attnlab_torch import mixers


class RegistryTests(unittest.TestCase):
    def test_every_registry_family_has_a_mixer(self):
        self.assertEqual(list(mixers.MIXERS), registry.families())
        for name in registry.families():
            path, module = mixers.mixer(name)
            self.assertEqual(path, registry.family(name)["module"])
            self.assertTrue(callable(module.mix), name)

    def test_a_family_without_a_python_mixer_fails_loudly(self):
        with self.assertRaises(ImportError) as caught:
            mixers._load("nosuchfamily")
        self.assertIn("python/attnlab_torch/mixers/nosuchfamily.py", str(caught.exception))

    def test_the_spec_readers_defaults_are_the_registrys(self):
        # spec.py still reads spec strings itself; its option table must say what Rust says.
        self.assertEqual(S.FAMILIES, tuple(registry.families()))
        for name in registry.families():
            mine = {key: default for key, (_, default) in S._SCHEMAS[name].items()}
            self.assertEqual(mine, registry.defaults(name), name)
            fam = registry.family(name)
            if fam["variants"] and not fam["variant_required"] and fam["default_variant"]:
                self.assertEqual(S.parse(name).variant, fam["default_variant"])
        self.assertEqual(S.SCALINGS, tuple(registry.family("softmax")["variants"]))
        self.assertEqual(S.FEATURE_MAPS, tuple(registry.family("linear")["variants"]))
        self.assertEqual(S.DECAY_GATES, tuple(registry.family("decay")["variants"]))

    def test_every_catalogue_entry_parses(self):
        for name in registry.families():
            for entry in registry.family(name)["catalogue"]:
                self.assertEqual(S.parse(entry["spec"]).family, name)

    def test_constants_come_from_the_registry(self):
        self.assertEqual(registry.convention("delta", "l2_eps"), 1e-6)
        self.assertEqual(registry.convention("softmax", "softpick_eps"), 1e-6)
        self.assertEqual(registry.convention("decay", "gla_logit_normalizer"), 16.0)


if __name__ == "__main__":
    unittest.main()
