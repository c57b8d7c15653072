"""``ttabench fetch`` and ``ttabench fetch-model``: verified downloads into the layouts the suites
and model sources read (``ttabench run`` itself never downloads).

- ``published``: where each dataset is published and the checksums published for its files;
- ``transfer``: one file over HTTP(S): resumable, checked, atomic;
- ``unpack``: archives unpacked without path traversal, links or devices;
- ``models``: the weight file of a model spec, where its model source reads it;
- ``command``: the two commands.
"""
