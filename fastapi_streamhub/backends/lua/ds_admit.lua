-- A cluster's half of a create's admission (the index is in its own slot): see ds_admit in
-- _ds_lib.lua. A reserved id is scored ARGV[3] ms ahead; the create then sets its real score
-- (ds_index.lua 'bump') or, when it does not create, drops it ('drop').
-- KEYS: the store's index   ARGV: sid, max streams ('' = no limit), hold_ms
-- Returns {'present' | 'full' | 'added'}.
return {ds_admit(KEYS[1], ARGV[1], ARGV[2], ARGV[3])}
