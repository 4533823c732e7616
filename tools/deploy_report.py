"""Deployment report: which architectures run in full on which edge accelerator, by the real toolchains.

The options and examples: ``python tools/deploy_report.py --help`` (`kerasseg.cli.deploy_report`).
"""

from kerasseg.cli.deploy_report import main

if __name__ == "__main__":
    raise SystemExit(main())
