"""The jobs (internal): one module per part of the work, each the only writer of its
own state, and :mod:`.tick`, the one tick that plans and runs them in an order written
once. Parts: :mod:`.pull` (Timer 1), :mod:`.canvas` (what ``/info`` said),
:mod:`.observations` (profile counts until ``/info`` confirms them, and the confirm
command), :mod:`.enrichment`, :mod:`.follow`, :mod:`.sweep` (Timer 2), and
:mod:`.profiles` (one profile read)."""
