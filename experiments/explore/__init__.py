"""An interactive explorer of a trained model in the browser: ``python -m experiments.explore``.

Draw a digit and watch every layer's output, click a unit to see the dot
product that made it, pick a class and watch its gradient flow back through
every layer, preview and apply one Adam step, or train a fresh model live.

* :mod:`experiments.explore.core` -- the computations (sessions, views);
* :mod:`experiments.explore.server` -- the HTTP server and the JSON API;
* ``static/`` -- the page (HTML, JavaScript, CSS; no build step, nothing fetched from elsewhere).
"""
