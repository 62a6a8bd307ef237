"""mitmproxy entry point: `mitmdump -s addons/webpolicy_addon.py`.

Deliberately tiny: mitmproxy reloads a `-s` script when it changes, and a script that fails to
load unloads the filter.  All the code lives in the `webpolicy` package, which is not reloaded.
"""

from webpolicy.proxy.addon import WebPolicy

# One add-on: it runs its companions (circumvention, safe search) itself, in order.
policy = WebPolicy()
addons = [policy]
