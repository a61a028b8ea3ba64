E=/root/.pyenv/versions/3.11.7/bin/envoy
$E -c envoy7.yaml --base-id 7718 -l warning > envoy.log 2>&1 < /dev/null & EP=$!
sleep 2
curl -s 127.0.0.1:18190/clusters | grep health_flags
curl -s "127.0.0.1:18190/clusters?format=json" | python3 -c "
import json,sys; d=json.load(sys.stdin)
for c in d['cluster_statuses']:
  for h in c.get('host_statuses',[]): print(c['name'], json.dumps(h['health_status']))
"
kill $EP
