module negrl/tools/node/pause

go 1.26.0
