# Sourced last by the scripts above: exec "$@" with {config} replaced by $output, or with
# `-c $output` appended when no argument asks for it (as kms-launch does).
argv=() placed=0
for arg in "$@"; do
    [[ $arg == *"{config}"* ]] && placed=1
    argv+=("${arg//\{config\}/$output}")
done
(( placed )) || argv+=(-c "$output")
exec "${argv[@]}"
