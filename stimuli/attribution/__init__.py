"""Explanations of a model's decision on one image: attribution maps (maps.py; Captum where
it has the method, rise.py, lowpass.py and wam.py where it has not), their faithfulness
(faithfulness.py), their rendering over the image (overlay.py), and CRAFT concepts
(craft.py).
"""
