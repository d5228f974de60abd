"""The registry (registry.json, attnlab's own description of its families) against what this
package does with it: a mixer for every family, and the spec reader reading the catalogue."""

import unittest

from attnlab_torch import mixers, registry
from attnlab_torch import spec as S


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

    def test_every_catalogue_spec_reads_and_prints_back_canonically(self):
        for name in registry.families():
            for entry in registry.family(name)["catalogue"]:
                s = S.parse(entry["spec"])
                self.assertEqual((s.family, s.module), (name, registry.family(name)["module"]))
                self.assertEqual(str(s), entry["spec"])
                self.assertEqual(S.parse(str(s)), s)

    def test_the_readers_defaults_are_the_registrys(self):
        for name in registry.families():
            fam = registry.family(name)
            if fam["variant_required"]:
                with self.assertRaises(ValueError):
                    S.parse(name)
                continue
            plain = S.parse(name)
            self.assertEqual(plain.values, fam["options"], name)
            self.assertEqual(plain.variant, fam["default_variant"], name)
            self.assertEqual(plain.conventions, fam["conventions"], name)
            self.assertEqual((str(plain), plain.options), (name, {}), name)
        for name in ("linear", "decay"):
            first = registry.family(name)["variants"][0]
            self.assertEqual(S.parse(f"{name}:{first}").values, registry.defaults(name))

    def test_every_variant_reads_and_prints(self):
        for name in registry.families():
            fam = registry.family(name)
            for variant in fam["variants"]:
                s = S.parse(f"{name}:{variant}")
                self.assertEqual(s.variant, variant)
                self.assertEqual(str(s), name if variant == fam["default_variant"] else f"{name}:{variant}")

    def test_option_values_are_typed_as_the_registrys_defaults(self):
        for name in registry.families():
            fam = registry.family(name)
            head = f"{name}:{fam['variants'][0]}" if fam["variant_required"] else name
            for key, default in fam["options"].items():
                # A word-valued option takes a value the registry lists (its last alternative).
                word = fam.get("choices", {}).get(key, ["other"])[-1]
                text = {bool: "true", int: "3", float: "2.5", str: word, type(None): "-4"}[type(default)]
                value = S.parse(f"{head}:{key}={text}")[key]
                self.assertIs(type(value), float if default is None else type(default), f"{name} {key}")

    def test_constants_come_from_the_registry(self):
        self.assertEqual(registry.convention("delta", "l2_eps"), 1e-6)
        self.assertEqual(registry.convention("softmax", "softpick_eps"), 1e-6)
        self.assertEqual(registry.convention("decay", "gla_logit_normalizer"), 16.0)


if __name__ == "__main__":
    unittest.main()
