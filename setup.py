"""Ships the Hydra config (conf/) inside the wheel as cft/conf, so `python -m cft.main` works
from an installed wheel (the offline bundle, launch/offline_bundle.py), not only from a
checkout; cft.config.CONF_DIR picks whichever exists. Everything else is in pyproject.toml.
(setuptools cannot map a directory outside the package tree with packages.find alone.)"""
import os

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithConf(build_py):
    def run(self):
        super().run()
        if not getattr(self, "editable_mode", False):  # an editable install reads the checkout's conf/
            self.copy_tree("conf", os.path.join(self.build_lib, "cft", "conf"))


setup(cmdclass={"build_py": BuildPyWithConf})
