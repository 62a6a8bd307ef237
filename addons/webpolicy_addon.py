"""mitmproxy entry point: `mitmdump -s addons/webpolicy_addon.py`.

Deliberately tiny: mitmproxy reloads a `-s` script when it changes, and a script that fails to
load unloads the filter.  All the code lives in the `webpolicy` package, which is not reloaded.
"""

from webpolicy.addon import WebPolicy
from webpolicy.addon_circumvention import Circumvention
from webpolicy.addon_safesearch import SafeSearch

# Order matters: WebPolicy decides first; the companions only touch flows it let through.
policy = WebPolicy()
addons = [policy, Circumvention(policy), SafeSearch(policy)]
